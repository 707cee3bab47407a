//! A one-slot hand-off between two threads where the newest item wins: the producer never waits,
//! and a slow consumer skips stale pictures instead of falling behind (the data plane between
//! capture and encoder).

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

pub(crate) struct Latest<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

struct Slot<T> {
    item: Option<T>,
    closed: bool,
    /// Items overwritten before the consumer took them.
    dropped: u64,
}

/// What [`Latest::take`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum Taken<T> {
    Item(T),
    TimedOut,
    Closed,
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Self {
            slot: Mutex::new(Slot {
                item: None,
                closed: false,
                dropped: 0,
            }),
            ready: Condvar::new(),
        }
    }
}

impl<T> Latest<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<T>> {
        // A panic elsewhere leaves a slot that is still a valid Option.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts an item, replacing one the consumer has not taken yet.
    pub(crate) fn put(&self, item: T) {
        let mut slot = self.lock();
        if slot.item.replace(item).is_some() {
            slot.dropped += 1;
        }
        self.ready.notify_one();
    }

    /// Waits up to `timeout` for an item.
    pub(crate) fn take(&self, timeout: Duration) -> Taken<T> {
        let slot = self.lock();
        let (mut slot, _) = self
            .ready
            .wait_timeout_while(slot, timeout, |s| s.item.is_none() && !s.closed)
            .unwrap_or_else(PoisonError::into_inner);
        match slot.item.take() {
            Some(item) => Taken::Item(item),
            None if slot.closed => Taken::Closed,
            None => Taken::TimedOut,
        }
    }

    /// Wakes the consumer for good: it gets what is left, then `Closed`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn newest_wins() {
        let latest = Latest::default();
        latest.put(1);
        latest.put(2);
        latest.put(3);
        assert_eq!(latest.take(Duration::ZERO), Taken::Item(3));
        assert_eq!(latest.dropped(), 2);
        assert_eq!(latest.take(Duration::from_millis(1)), Taken::TimedOut);
    }

    #[test]
    fn close_wakes_a_waiting_consumer() {
        let latest = Arc::new(Latest::<u32>::default());
        let consumer = {
            let latest = Arc::clone(&latest);
            std::thread::spawn(move || latest.take(Duration::from_secs(30)))
        };
        latest.close();
        assert_eq!(consumer.join().unwrap(), Taken::Closed);
    }

    #[test]
    fn item_put_before_close_is_still_delivered() {
        let latest = Latest::default();
        latest.put(7);
        latest.close();
        assert_eq!(latest.take(Duration::ZERO), Taken::Item(7));
        assert_eq!(latest.take(Duration::ZERO), Taken::Closed);
    }
}
