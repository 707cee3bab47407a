//! The benchmark clip: camportal's test pattern with sensor-like noise, dumped once per size as
//! raw I420, so that camportal (its `file` source) and ffmpeg encode the very same pictures.
//!
//! Why noise: the bare pattern is flat colour and compresses to a third of 2 Mbit/s, which
//! flatters both encoders and makes "2 Mbit/s" a lie for the viewer test. A camera's picture is
//! never clean: fresh noise in every picture makes both encoders work at the target rate. How
//! much matters, for openh264 more than for x264 (its background detection skips what did not
//! change but for a little noise), so the encoders are compared at two levels.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail};
use camportal::TestSrc;
use camportal::frame::{CaptureTime, RawFrame};
use camportal::stamp;

/// Bump when the content changes, so old clips are not reused.
const VERSION: u32 = 1;

/// How noisy the picture is: uniform noise of ± this many levels on luma (half on chroma).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noise(pub i32);

/// A camera indoors in good light (σ ≈ 2 levels): the benchmark's content.
pub const CAMERA: Noise = Noise(3);
/// A camera in poor light (σ ≈ 3.7 levels).
pub const LOW_LIGHT: Noise = Noise(6);

impl std::fmt::Display for Noise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "±{}", self.0)
    }
}

/// The clip's file for this size and length, written if it is not there yet.
pub fn ensure(
    work: &Path,
    width: u32,
    height: u32,
    frames: u32,
    noise: Noise,
) -> anyhow::Result<PathBuf> {
    let path = work.join(format!(
        "clip-v{VERSION}-{width}x{height}-{frames}-noise{}.yuv",
        noise.0
    ));
    let want = RawFrame::i420_len(width, height) as u64 * u64::from(frames);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == want) {
        return Ok(path);
    }
    eprintln!("writing the {width}x{height} benchmark clip ({frames} pictures, noise {noise})…");
    let partial = path.with_extension("partial");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    for i in 0..frames {
        out.write_all(&picture(width, height, i, noise))?;
    }
    out.into_inner()
        .map_err(|err| err.into_error())?
        .sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// The raw clip `raw` (I420, `w`x`h` at `fps`) encoded by ffmpeg with the output options
/// `output`, made once beside it as `<raw>.<extension>`.
pub fn converted(
    raw: &Path,
    (w, h): (u32, u32),
    fps: u32,
    extension: &str,
    output: &[&str],
) -> anyhow::Result<PathBuf> {
    let path = raw.with_extension(extension);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        return Ok(path);
    }
    let partial = raw.with_extension(format!("{extension}.partial"));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p"])
        .args(["-s", &format!("{w}x{h}"), "-framerate", &fps.to_string()])
        .arg("-i")
        .arg(raw)
        .args(output)
        .arg(&partial)
        .status()
        .with_context(|| format!("starting ffmpeg to make the {extension} clip"))?;
    if !status.success() {
        bail!("ffmpeg could not make the {extension} clip: {status}");
    }
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// Picture `i` of the clip: the same bytes on every machine.
pub fn picture(width: u32, height: u32, i: u32, Noise(noise): Noise) -> Vec<u8> {
    let src = TestSrc::new(width, height, 30);
    // A fixed clock, so that the clip does not depend on when it was made.
    let capture = CaptureTime {
        wall: UNIX_EPOCH + Duration::from_secs(1_750_000_000) + Duration::from_secs(1) * i / 30,
        mono: Instant::now(),
    };
    let mut data = src.render(i, capture).data;
    let band = stamp::band_height(width, height) as usize * width as usize;
    let luma = (width * height) as usize;
    let mut rng =
        XorShift(0x9E37_79B9_7F4A_7C15 ^ u64::from(i).wrapping_mul(0xD1B5_4A32_D192_ED03));
    // The stamp band stays clean (it is read back); luma and chroma below it get noise.
    for (k, v) in data.iter_mut().enumerate().skip(band) {
        let amplitude = if k < luma { noise } else { noise / 2 };
        let n = (rng.next() % (2 * amplitude as u64 + 1)) as i32 - amplitude;
        *v = (i32::from(*v) + n).clamp(0, 255) as u8;
    }
    data
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_reproducible_noisy_and_stamped() {
        let (w, h) = (320, 240);
        let a = picture(w, h, 5, CAMERA);
        assert_eq!(a, picture(w, h, 5, CAMERA));
        assert_ne!(a, picture(w, h, 6, CAMERA));
        assert_ne!(a, picture(w, h, 5, LOW_LIGHT));
        assert_eq!(a.len(), RawFrame::i420_len(w, h));
        let s = stamp::read(&a, w as usize, w, h).expect("stamp survives");
        assert_eq!(s.frame, 5);
    }
}
