//! The built-in test pattern: colour bars and a grey ramp with a bouncing box (so an eye sees it
//! move), a readable clock (wall time UTC and frame number) and the machine-readable
//! [`stamp`](crate::stamp) band at the top, paced by the monotonic clock at the configured fps.
//!
//! Generating a picture must cost far less than encoding it: the static background is drawn once,
//! and each frame is a copy of it plus the few things that change (box, text, stamp).

use crate::source::font;

use crate::frame::{CaptureTime, RawFrame};
use crate::source::pacer::Pacer;
use crate::source::{Captured, Source, SourceError};
use crate::stamp::{self, Stamp};

/// Video-range levels (BT.601): black, white, neutral chroma.
const BLACK: u8 = 16;
const WHITE: u8 = 235;
const NEUTRAL: u8 = 128;
/// Characters per text line: "HH:MM:SS.mmm UTC" and "FRAME 4294967295" are both 16.
const TEXT_CHARS: usize = 16;
/// Seconds for the box to cross the picture horizontally and back, and vertically and back.
const SWEEP_X_SECS: f64 = 4.0;
const SWEEP_Y_SECS: f64 = 3.0;

/// Where things go in a picture of a given size (all even, so chroma lines up).
#[derive(Debug, Clone, Copy)]
struct Layout {
    text_x: usize,
    text_y: usize,
    scale: usize,
    motion_top: usize,
    box_size: usize,
}

pub struct TestSrc {
    width: u32,
    height: u32,
    fps: u32,
    /// The static part of every picture, I420.
    background: Vec<u8>,
    layout: Layout,
    /// Counts yielded pictures (not ticks), so a gap seen downstream is a loss downstream.
    frame: u32,
    pacer: Pacer,
}

impl TestSrc {
    /// A pattern of `width` x `height` at `fps`. Odd sizes are rounded down to even (I420), sizes
    /// below 16 raised to 16 and fps 0 to 1.
    pub fn new(width: u32, height: u32, fps: u32) -> TestSrc {
        let (w, h, f) = ((width & !1).max(16), (height & !1).max(16), fps.max(1));
        if (w, h, f) != (width, height, fps) {
            tracing::warn!(
                width,
                height,
                fps,
                "test pattern: adjusted to {w}x{h} at {f} fps"
            );
        }
        let layout = layout(w as usize, h as usize);
        TestSrc {
            width: w,
            height: h,
            fps: f,
            background: background(w as usize, h as usize, &layout),
            layout,
            frame: 0,
            pacer: Pacer::new(f),
        }
    }

    /// Draws picture number `frame` as captured at `capture`, without pacing. [`Source::next`]
    /// uses it; benchmarks and tests can call it directly.
    pub fn render(&self, frame: u32, capture: CaptureTime) -> RawFrame {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut data = self.background.clone();
        let stamp = Stamp::new(frame, capture.wall);

        self.draw_box(&mut data, frame);
        let (y_plane, _) = data.split_at_mut(w * h);
        let l = &self.layout;
        let line_h = font::CELL_H * l.scale;
        font::draw(
            y_plane,
            w,
            l.text_x,
            l.text_y,
            l.scale,
            &clock_text(stamp.unix_micros),
            WHITE,
        );
        let frame_text = format!("FRAME {frame}");
        font::draw(
            y_plane,
            w,
            l.text_x,
            l.text_y + line_h,
            l.scale,
            &frame_text,
            WHITE,
        );
        stamp::write(&stamp, y_plane, self.width, self.height);

        RawFrame {
            width: self.width,
            height: self.height,
            data,
            capture,
        }
    }

    /// A white box with a black core bouncing through the lower part of the picture; its position
    /// is a function of the frame's time so the motion speed does not depend on fps.
    fn draw_box(&self, data: &mut [u8], frame: u32) {
        let (w, h) = (self.width as usize, self.height as usize);
        let l = &self.layout;
        if l.box_size == 0 {
            return;
        }
        let t = f64::from(frame) / f64::from(self.fps);
        let x = even((triangle(t / SWEEP_X_SECS) * (w - l.box_size) as f64) as usize);
        let span = h.saturating_sub(l.motion_top + l.box_size);
        let y = l.motion_top + even((triangle(t / SWEEP_Y_SECS) * span as f64) as usize);
        fill_rect(
            data,
            w,
            h,
            x,
            y,
            l.box_size,
            l.box_size,
            [WHITE, NEUTRAL, NEUTRAL],
        );
        let core = even(l.box_size / 3);
        let off = even((l.box_size - core) / 2);
        fill_rect(
            data,
            w,
            h,
            x + off,
            y + off,
            core,
            core,
            [BLACK, NEUTRAL, NEUTRAL],
        );
    }
}

impl Source for TestSrc {
    fn next(&mut self) -> Result<Captured, SourceError> {
        let capture = self.pacer.wait_for_tick();
        let picture = self.render(self.frame, capture);
        self.frame = self.frame.wrapping_add(1);
        Ok(Captured::Raw(picture))
    }
}

fn even(v: usize) -> usize {
    v & !1
}

/// 0 → 1 → 0 over each unit of `p`.
fn triangle(p: f64) -> f64 {
    let f = p.fract();
    if f < 0.5 { 2.0 * f } else { 2.0 - 2.0 * f }
}

/// "HH:MM:SS.mmm UTC" of a Unix time in microseconds.
fn clock_text(unix_micros: u64) -> String {
    let ms_of_day = (unix_micros / 1000) % 86_400_000;
    let (h, m) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (s, ms) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{h:02}:{m:02}:{s:02}.{ms:03} UTC")
}

fn layout(w: usize, h: usize) -> Layout {
    let band = stamp::band_height(w as u32, h as u32) as usize;
    let text_cols = TEXT_CHARS * font::CELL_W;
    // About 40% of the width, at least 2x so it is readable at 320x240, and never wider than
    // the picture.
    let scale = (w / 240).max(2).min(w / (text_cols + 4)).max(1);
    let pad = 2 * scale;
    let plate_w = text_cols * scale + 2 * pad;
    let plate_h = 2 * font::CELL_H * scale + 2 * pad;
    let plate_x = even(w.saturating_sub(plate_w) / 2);
    let plate_y = even(band + pad);
    let motion_top = even(plate_y + plate_h + pad).min(h);
    let box_size = even((h / 6).min(h.saturating_sub(motion_top)).min(w));
    Layout {
        text_x: plate_x + pad,
        text_y: plate_y + pad,
        scale,
        motion_top,
        box_size,
    }
}

/// Colour bars (75%, BT.601 video range) over the upper two thirds below the stamp band, a grey
/// ramp below, a black plate for the text; the band itself is black with neutral chroma.
fn background(w: usize, h: usize, l: &Layout) -> Vec<u8> {
    let mut data = vec![0u8; RawFrame::i420_len(w as u32, h as u32)];
    fill_rect(&mut data, w, h, 0, 0, w, h, [BLACK, NEUTRAL, NEUTRAL]);

    let band = stamp::band_height(w as u32, h as u32) as usize;
    let bars_top = even(band);
    let bars_end = even(bars_top + (h - bars_top) * 2 / 3);
    const BARS: [(f32, f32, f32); 7] = [
        (0.75, 0.75, 0.75),
        (0.75, 0.75, 0.0),
        (0.0, 0.75, 0.75),
        (0.0, 0.75, 0.0),
        (0.75, 0.0, 0.75),
        (0.75, 0.0, 0.0),
        (0.0, 0.0, 0.75),
    ];
    for (i, &rgb) in BARS.iter().enumerate() {
        let x0 = even(w * i / BARS.len());
        let x1 = even(w * (i + 1) / BARS.len());
        fill_rect(
            &mut data,
            w,
            h,
            x0,
            bars_top,
            x1 - x0,
            bars_end - bars_top,
            yuv(rgb),
        );
    }

    let (y_plane, _) = data.split_at_mut(w * h);
    for row in y_plane.chunks_exact_mut(w).skip(bars_end) {
        for (x, v) in row.iter_mut().enumerate() {
            *v = BLACK + (usize::from(WHITE - BLACK) * x / (w - 1).max(1)) as u8;
        }
    }

    let pad = 2 * l.scale;
    let plate_w = TEXT_CHARS * font::CELL_W * l.scale + 2 * pad;
    let plate_h = 2 * font::CELL_H * l.scale + 2 * pad;
    let (px, py) = (l.text_x - pad, l.text_y - pad);
    fill_rect(
        &mut data,
        w,
        h,
        px,
        py,
        plate_w,
        plate_h,
        [BLACK, NEUTRAL, NEUTRAL],
    );
    data
}

/// BT.601 video-range Y'CbCr of gamma-encoded RGB in [0, 1].
fn yuv((r, g, b): (f32, f32, f32)) -> [u8; 3] {
    let y = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b;
    let u = 128.0 - 37.797 * r - 74.203 * g + 112.0 * b;
    let v = 128.0 + 112.0 * r - 93.786 * g - 18.214 * b;
    [y.round() as u8, u.round() as u8, v.round() as u8]
}

/// Fills a rectangle (clipped to the picture; x, y, rw, rh even) in all three I420 planes.
#[allow(clippy::too_many_arguments)]
fn fill_rect(
    data: &mut [u8],
    w: usize,
    h: usize,
    x: usize,
    y: usize,
    rw: usize,
    rh: usize,
    c: [u8; 3],
) {
    let (x1, y1) = ((x + rw).min(w), (y + rh).min(h));
    if x >= x1 || y >= y1 {
        return;
    }
    let (y_plane, uv) = data.split_at_mut(w * h);
    let (u_plane, v_plane) = uv.split_at_mut((w / 2) * (h / 2));
    for row in y_plane.chunks_exact_mut(w).take(y1).skip(y) {
        row[x..x1].fill(c[0]);
    }
    let (cx, cx1, cw) = (x / 2, x1 / 2, w / 2);
    for (plane, value) in [(u_plane, c[1]), (v_plane, c[2])] {
        for row in plane.chunks_exact_mut(cw).take(y1 / 2).skip(y / 2) {
            row[cx..cx1].fill(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn raw(c: Captured) -> RawFrame {
        match c {
            Captured::Raw(f) => f,
            Captured::Jpeg(..) | Captured::H264(_) => panic!("test pattern yields raw pictures"),
        }
    }

    #[test]
    fn yields_configured_size_with_stamp_and_counter() {
        for (w, h) in [(320, 240), (640, 480), (1280, 720)] {
            let mut src = TestSrc::new(w, h, 100);
            for i in 0..3u32 {
                let f = raw(src.next().expect("frame"));
                assert_eq!((f.width, f.height), (w, h));
                assert_eq!(f.data.len(), RawFrame::i420_len(w, h));
                let s = stamp::read(&f.data, w as usize, w, h).expect("stamp");
                assert_eq!(s, Stamp::new(i, f.capture.wall));
            }
        }
    }

    #[test]
    fn odd_sizes_and_zero_fps_are_adjusted_not_fatal() {
        let mut src = TestSrc::new(321, 7, 0);
        let f = raw(src.next().expect("frame"));
        assert_eq!((f.width, f.height), (320, 16));
        assert_eq!(f.data.len(), RawFrame::i420_len(320, 16));
    }

    #[test]
    fn paced_by_the_monotonic_clock() {
        let fps = 50;
        let period = Duration::from_millis(20);
        let mut src = TestSrc::new(320, 240, fps);
        let times: Vec<Instant> = (0..11)
            .map(|_| raw(src.next().expect("frame")).capture.mono)
            .collect();
        for pair in times.windows(2) {
            let d = pair[1] - pair[0];
            assert!(d >= Duration::from_millis(15), "interval {d:?} too short");
            assert!(d <= Duration::from_millis(60), "interval {d:?} too long");
        }
        let total = times[10] - times[0];
        assert!(
            total >= period * 10 - Duration::from_millis(2),
            "total {total:?}"
        );
        assert!(
            total <= period * 10 + Duration::from_millis(40),
            "total {total:?}"
        );
    }

    #[test]
    fn late_caller_skips_ticks_instead_of_bursting() {
        let mut src = TestSrc::new(320, 240, 50);
        let first = raw(src.next().expect("frame"));
        // Miss three and a half ticks.
        std::thread::sleep(Duration::from_millis(70));
        let late = raw(src.next().expect("frame"));
        let after = raw(src.next().expect("frame"));
        // The late one comes at once, the next one at the next tick of the grid (t0 + 80 ms),
        // not right after it.
        assert!(after.capture.mono - late.capture.mono >= Duration::from_millis(5));
        let since_first = after.capture.mono - first.capture.mono;
        assert!(since_first >= Duration::from_millis(79), "{since_first:?}");
        // Frame numbers stay consecutive: skipped ticks are not counted as frames.
        let s = stamp::read(&after.data, 320, 320, 240).expect("stamp");
        assert_eq!(s.frame, 2);
    }

    #[test]
    fn picture_moves_and_clock_reads() {
        let src = TestSrc::new(640, 480, 30);
        let c = CaptureTime::now();
        let a = src.render(0, c);
        let b = src.render(15, c);
        let band = stamp::band_height(640, 480) as usize * 640;
        let differing = a.data[band..]
            .iter()
            .zip(&b.data[band..])
            .filter(|(x, y)| x != y)
            .count();
        assert!(differing > 1000, "only {differing} bytes differ");
        assert_eq!(
            clock_text(((13 * 3600 + 4 * 60 + 5) * 1000 + 67) * 1000 + 999),
            "13:04:05.067 UTC"
        );
    }
}
