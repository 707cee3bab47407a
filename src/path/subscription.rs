//! A reader's hold on its path's encoded stream (a WHEP viewer, an RTSP session): it joins the
//! path's broadcaster while the path runs, rejoins a restarted path, skips to a keyframe after
//! any gap (joining, lagging) and asks for one, and tells when the path is removed. Every await
//! in it is cancel-safe, so a reader can `select!` on [`Subscription::next`] among its other work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tracing::{debug, info};

use ractor::ActorRef;

use super::broadcaster::{BroadcasterMsg, Counted, VideoFrame};
use super::directory::{Directory, Entry};
use crate::keyframe::RequestLimit;
use crate::metrics::KeyframeReason;
use crate::status::ReaderKind;

/// One reader's keyframe requests (PLI, FIR, lagging) count at most this often: a reader
/// asking at 50 Hz must not raise every reader's keyframe rate.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) enum Event {
    /// The next frame to send; the first after any gap is a keyframe.
    Frame(Arc<VideoFrame>),
    /// The path left the configuration: it is not coming back.
    Removed,
}

struct Joined {
    broadcaster: ActorRef<BroadcasterMsg>,
    frames: broadcast::Receiver<Arc<VideoFrame>>,
    counted: Counted,
}

pub(crate) struct Subscription {
    /// Tells this reader's reports apart at the broadcaster.
    id: u64,
    path: String,
    kind: ReaderKind,
    entry: watch::Receiver<Entry>,
    joined: Option<Joined>,
    waiting_for_keyframe: bool,
    keyframe_requests: RequestLimit,
}

impl Subscription {
    /// Follows `path` in `directory`; nothing is joined until [`Subscription::next`] is polled.
    pub(crate) fn new(directory: &Directory, path: &str, kind: ReaderKind) -> Subscription {
        Subscription {
            id: rand::random(),
            path: path.to_owned(),
            kind,
            entry: directory.watch(path),
            joined: None,
            waiting_for_keyframe: true,
            keyframe_requests: RequestLimit::new(KEYFRAME_REQUEST_INTERVAL),
        }
    }

    /// The next frame to send, or the path's removal. While the path is away (restarting), it
    /// waits for it to come back.
    pub(crate) async fn next(&mut self) -> Event {
        loop {
            if let Some(joined) = &mut self.joined {
                match joined.frames.recv().await {
                    Ok(frame) => {
                        if self.waiting_for_keyframe {
                            if !frame.keyframe {
                                continue;
                            }
                            self.waiting_for_keyframe = false;
                        }
                        return Event::Frame(frame);
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        debug!(path = %self.path, skipped, "reader lagged; waiting for a keyframe");
                        self.waiting_for_keyframe = true;
                        self.ask_for_keyframe(KeyframeReason::Lag);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        info!(path = %self.path, "path went away; reader waits for it");
                        self.joined = None;
                        self.waiting_for_keyframe = true;
                    }
                }
                continue;
            }
            // Marked seen: a change from here on wakes the wait below.
            let entry = self.entry.borrow_and_update().clone();
            match entry {
                Entry::Running(joinable) => {
                    let (frames, counted) = joinable.join(self.kind);
                    self.joined = Some(Joined {
                        broadcaster: joinable.actor.clone(),
                        frames,
                        counted,
                    });
                    self.waiting_for_keyframe = true;
                    info!(path = %self.path, kind = ?self.kind, "reader joined the path");
                    continue;
                }
                Entry::Removed => return Event::Removed,
                Entry::Away => {}
            }
            // The root tells the path's watchers it was removed before forgetting it.
            if self.entry.changed().await.is_err() {
                return Event::Removed;
            }
        }
    }

    /// Asks for a keyframe (a PLI or FIR from the reader), at most once a second.
    pub(crate) fn want_keyframe(&mut self) {
        self.ask_for_keyframe(KeyframeReason::Pli);
    }

    fn ask_for_keyframe(&mut self, reason: KeyframeReason) {
        if let Some(joined) = &self.joined
            && self.keyframe_requests.allow(Instant::now())
        {
            let _ = joined
                .broadcaster
                .cast(BroadcasterMsg::KeyframeWanted(reason));
        }
    }

    /// The reader's bandwidth estimate (a WebRTC viewer's congestion controller), which the
    /// path's encoder follows (see `bandwidth.rs`).
    pub(crate) fn report_estimate(&self, bps: u64) {
        if let Some(joined) = &self.joined {
            let _ = joined.broadcaster.cast(BroadcasterMsg::Estimate {
                reader: self.id,
                bps,
            });
        }
    }

    /// What the reader sent, for the path's outbound traffic (nothing while the path is away).
    pub(crate) fn sent(&self, bytes: usize, packets: u64) {
        if let Some(joined) = &self.joined {
            joined.counted.sent(bytes, packets);
        }
    }
}
