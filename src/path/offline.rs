//! While a path's camera is away its viewers stay connected and see a "camera offline" picture,
//! encoded like any other, with a clock that shows the picture is live. When the camera's first
//! picture comes back the offline pictures stop at once: the [`Switch`] makes sure no offline
//! picture can follow it into the hand-off.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::frame::{CaptureTime, RawFrame};
use crate::handoff::Latest;
use crate::source::Captured;
use crate::source::font;

/// Offline pictures per second: the clock ticks in seconds, and few pictures of a still image
/// cost the encoder next to nothing, yet a viewer that joins gets a keyframe promptly.
const OFFLINE_FPS: u32 = 5;
/// Background luma: a dark grey, distinct from black (a camera with its lens covered).
const BACKGROUND: u8 = 48;
const TEXT: u8 = 235;
const NEUTRAL: u8 = 128;

/// Who feeds the hand-off: the camera, or (while it is away) the offline picture.
#[derive(Default)]
pub(super) struct Switch {
    offline: Mutex<bool>,
}

impl Switch {
    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.offline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The camera is away: offline pictures may be put from now on.
    pub(super) fn go_offline(&self) {
        *self.lock() = true;
    }

    /// The camera's picture: ends the offline pictures, atomically with respect to them.
    pub(super) fn put_camera(&self, handoff: &Latest<Captured>, captured: Captured) {
        let mut offline = self.lock();
        *offline = false;
        handoff.put(captured);
    }

    /// Puts an offline picture unless the camera is back; false once it is.
    fn put_offline(&self, handoff: &Latest<Captured>, picture: impl FnOnce() -> RawFrame) -> bool {
        let offline = self.lock();
        if *offline {
            handoff.put(Captured::Raw(picture()));
        }
        *offline
    }
}

/// The offline picture of one size; the static part is drawn once.
pub(super) struct OfflinePicture {
    width: u32,
    height: u32,
    background: Vec<u8>,
    clock_at: (usize, usize),
    clock_scale: usize,
}

impl OfflinePicture {
    /// "CAMERA OFFLINE", what the source is, and since when; the clock is drawn per picture.
    pub(super) fn new(width: u32, height: u32, source: &str, since: SystemTime) -> OfflinePicture {
        let (w, h) = (width as usize, height as usize);
        let mut data = vec![NEUTRAL; RawFrame::i420_len(width, height)];
        data[..w * h].fill(BACKGROUND);
        let title = "CAMERA OFFLINE";
        let title_scale = (w / (title.len() * font::CELL_W + 4)).clamp(1, 12);
        let small_scale = (title_scale / 3).max(1);
        let since_text = format!("SINCE {}", clock_text(since));
        // A character's margin on either side.
        let chars = (w / (font::CELL_W * small_scale)).saturating_sub(2);
        let source_text = fit(&source.to_uppercase(), chars);
        let lines: [(&str, usize); 3] = [
            (title, title_scale),
            (&source_text, small_scale),
            (&since_text, small_scale),
        ];
        let line_height = |scale: usize| (font::CELL_H + 2) * scale;
        let total: usize =
            lines.iter().map(|(_, s)| line_height(*s)).sum::<usize>() + line_height(small_scale);
        let mut y = h.saturating_sub(total) / 2;
        let y_plane = &mut data[..w * h];
        for (text, scale) in lines {
            let x = w.saturating_sub(text.len() * font::CELL_W * scale) / 2;
            font::draw(y_plane, w, x, y, scale, text, TEXT);
            y += line_height(scale);
        }
        let clock_width = clock_line(UNIX_EPOCH).len() * font::CELL_W * small_scale;
        OfflinePicture {
            width,
            height,
            background: data,
            clock_at: (w.saturating_sub(clock_width) / 2, y),
            clock_scale: small_scale,
        }
    }

    pub(super) fn render(&self, capture: CaptureTime) -> RawFrame {
        let mut data = self.background.clone();
        let w = self.width as usize;
        let (x, y) = self.clock_at;
        let y_plane = &mut data[..w * self.height as usize];
        font::draw(
            y_plane,
            w,
            x,
            y,
            self.clock_scale,
            &clock_line(capture.wall),
            TEXT,
        );
        RawFrame {
            width: self.width,
            height: self.height,
            data,
            capture,
        }
    }
}

/// Tells an offline picture from a camera's after H.264 compression (tests, benchmarks): all
/// four corners are the flat background.
pub fn is_offline_picture(luma: &[u8], width: u32, height: u32) -> bool {
    let (w, h) = (width as usize, height as usize);
    if luma.len() < w * h || w < 32 || h < 32 {
        return false;
    }
    let block = (w.min(h) / 16).max(4);
    let corners = [
        (2, 2),
        (w - block - 2, 2),
        (2, h - block - 2),
        (w - block - 2, h - block - 2),
    ];
    corners.iter().all(|&(x0, y0)| {
        (y0..y0 + block).all(|y| {
            luma[y * w + x0..y * w + x0 + block]
                .iter()
                .all(|v| v.abs_diff(BACKGROUND) <= 12)
        })
    })
}

/// Cuts `text` to at most `chars` characters, marking the cut.
fn fit(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(chars.saturating_sub(2)).collect();
    out.push_str("..");
    out
}

/// The live clock: the picture is not frozen.
fn clock_line(at: SystemTime) -> String {
    format!("NOW {}", clock_text(at))
}

/// "HH:MM:SS UTC".
fn clock_text(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A thread that feeds offline pictures until the camera is back or it is dropped.
pub(super) struct OfflineFeed {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl OfflineFeed {
    pub(super) fn start(
        path: &str,
        picture: OfflinePicture,
        handoff: Arc<Latest<Captured>>,
        switch: Arc<Switch>,
    ) -> std::io::Result<OfflineFeed> {
        let (stop, stopped) = mpsc::channel::<()>();
        let period = Duration::from_secs(1) / OFFLINE_FPS;
        let thread = std::thread::Builder::new()
            .name(format!("offline {path}"))
            .spawn(move || {
                while switch.put_offline(&handoff, || picture.render(CaptureTime::now())) {
                    match stopped.recv_timeout(period) {
                        Err(RecvTimeoutError::Timeout) => {}
                        // Dropped (or, never, a message): stop.
                        _ => break,
                    }
                }
            })?;
        Ok(OfflineFeed {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for OfflineFeed {
    fn drop(&mut self) {
        // Waking it is immediate, and a picture is drawn in well under a millisecond.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("offline picture thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::Taken;

    #[test]
    fn the_picture_reads_as_offline_and_a_camera_picture_does_not() {
        let picture = OfflinePicture::new(640, 480, "v4l2 /dev/video0", SystemTime::now());
        let frame = picture.render(CaptureTime::now());
        assert_eq!((frame.width, frame.height), (640, 480));
        assert_eq!(frame.data.len(), RawFrame::i420_len(640, 480));
        let luma = &frame.data[..640 * 480];
        assert!(is_offline_picture(luma, 640, 480));
        // There is text: bright pixels in the middle.
        assert!(luma.iter().filter(|v| **v == TEXT).count() > 1000);
        // Colour bars are not offline.
        let bars: Vec<u8> = (0..640 * 480).map(|i| (16 + (i % 640) / 3) as u8).collect();
        assert!(!is_offline_picture(&bars, 640, 480));
        // Tiny and odd inputs do not panic.
        let small = OfflinePicture::new(160, 120, &"X".repeat(200), SystemTime::now());
        assert!(is_offline_picture(
            &small.render(CaptureTime::now()).data[..160 * 120],
            160,
            120
        ));
        assert!(!is_offline_picture(&[], 640, 480));
    }

    #[test]
    fn the_camera_ends_the_offline_pictures() {
        let handoff = Arc::new(Latest::default());
        let switch = Arc::new(Switch::default());
        switch.go_offline();
        let feed = OfflineFeed::start(
            "cam",
            OfflinePicture::new(320, 240, "testsrc", SystemTime::now()),
            Arc::clone(&handoff),
            Arc::clone(&switch),
        )
        .unwrap();
        assert!(matches!(
            handoff.take(Duration::from_secs(5)),
            Taken::Item(Captured::Raw(_))
        ));
        let camera = RawFrame {
            width: 2,
            height: 2,
            data: vec![1; 6],
            capture: CaptureTime::now(),
        };
        switch.put_camera(&handoff, Captured::Raw(camera));
        // Whatever the feeder was doing, nothing offline comes after the camera's picture.
        match handoff.take(Duration::from_secs(1)) {
            Taken::Item(Captured::Raw(frame)) => assert_eq!(frame.width, 2),
            other => panic!("expected the camera's picture, got {other:?}"),
        }
        assert!(matches!(
            handoff.take(Duration::from_millis(600)),
            Taken::TimedOut
        ));
        drop(feed);
    }

    #[test]
    fn clock_and_fit() {
        assert_eq!(
            clock_text(UNIX_EPOCH + Duration::from_secs(86_400 + 3661)),
            "01:01:01 UTC"
        );
        assert_eq!(fit("ABCDEF", 10), "ABCDEF");
        assert_eq!(fit("ABCDEFGHIJKL", 6), "ABCD..");
    }
}
