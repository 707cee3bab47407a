//! One MJPEG reader: follows its path (across restarts, like a viewer) and turns its pictures
//! into `multipart/x-mixed-replace` parts. Pulled by the HTTP body: a slow reader is asked for
//! its next part only when it took the last, and then gets the newest picture, skipping the
//! ones in between; it never holds up the encoder or other readers.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::JpegCache;
use crate::frame::RawFrame;
use crate::path::{Counted, Directory, Entry};
use crate::status::ReaderKind;

/// The multipart boundary.
pub(crate) const BOUNDARY: &str = "camportal-frame";

struct Watching {
    pictures: watch::Receiver<Option<Arc<RawFrame>>>,
    cache: Arc<JpegCache>,
    counted: Counted,
}

pub(crate) struct MjpegReader {
    entry: watch::Receiver<Entry>,
    watching: Option<Watching>,
    quality: u8,
    /// The `?fps=` cap, as the least time between parts.
    min_interval: Option<Duration>,
    last_sent: Option<Instant>,
    sent_any: bool,
}

impl MjpegReader {
    pub(crate) fn new(directory: &Directory, path: &str, quality: u8, fps: Option<f64>) -> Self {
        MjpegReader {
            entry: directory.watch(path),
            watching: None,
            quality,
            // `fps` is checked to be within 0.01..=1000 by the handler.
            min_interval: fps.map(|fps| Duration::from_secs_f64(1.0 / fps.clamp(0.01, 1000.0))),
            last_sent: None,
            sent_any: false,
        }
    }

    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures_util::stream::unfold(self, |mut reader| async move {
            let part = reader.next_part().await?;
            Some((Ok(part), reader))
        })
    }

    /// The next part, or None when the path is removed (the response then ends).
    async fn next_part(&mut self) -> Option<Bytes> {
        if let (Some(interval), Some(last)) = (self.min_interval, self.last_sent) {
            tokio::time::sleep_until(last + interval).await;
        }
        loop {
            let Some(watching) = &mut self.watching else {
                // Marked seen: a change from here on wakes the wait below.
                let entry = self.entry.borrow_and_update().clone();
                match entry {
                    Entry::Running(joinable) => {
                        let (pictures, cache) = joinable.pictures();
                        self.watching = Some(Watching {
                            pictures,
                            cache,
                            counted: joinable.count(ReaderKind::Mjpeg),
                        });
                        continue;
                    }
                    Entry::Removed => return None,
                    Entry::Away => {}
                }
                if self.entry.changed().await.is_err() {
                    return None;
                }
                continue;
            };
            tokio::select! {
                changed = watching.pictures.changed() => {
                    if changed.is_err() {
                        // The path's data plane is gone: look at its entry again.
                        self.watching = None;
                        continue;
                    }
                    let Some(picture) = watching.pictures.borrow_and_update().clone() else {
                        continue;
                    };
                    let (cache, quality) = (Arc::clone(&watching.cache), self.quality);
                    let jpeg = tokio::task::spawn_blocking(move || cache.get(&picture, quality))
                        .await
                        .ok()?;
                    let Ok(jpeg) = jpeg else {
                        return None;
                    };
                    self.last_sent = Some(Instant::now());
                    let part = self.part(&jpeg);
                    if let Some(watching) = &self.watching {
                        watching.counted.sent(part.len(), 1);
                    }
                    return Some(part);
                }
                changed = self.entry.changed() => {
                    // Restarted or replaced: watch the running one.
                    self.watching = None;
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// One part, followed at once by the next boundary: a browser shows a part only when it
    /// sees the boundary after it.
    fn part(&mut self, jpeg: &[u8]) -> Bytes {
        let mut part = BytesMut::with_capacity(jpeg.len() + 128);
        if !std::mem::replace(&mut self.sent_any, true) {
            part.put_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        }
        part.put_slice(
            format!(
                "Content-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                jpeg.len()
            )
            .as_bytes(),
        );
        part.put_slice(jpeg);
        part.put_slice(format!("\r\n--{BOUNDARY}\r\n").as_bytes());
        part.freeze()
    }
}
