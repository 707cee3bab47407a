//! The encoders alone, as fast as they go: openh264 as camportal sets it up (in this process, CPU
//! time of the encoding thread per picture) against libx264 as the seed runs it (ffmpeg reading
//! the same clip, `-preset ultrafast`, the process's CPU time per picture). The difference is
//! the part of the pipeline comparison that is the encoder's and not the rest of the pipeline's.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use camportal::encoder::{Encoder, EncoderSettings};
use camportal::frame::{CaptureTime, RawFrame};

use crate::report::{Section, Table};
use crate::{Bench, clip, proc};

const FPS: u32 = 30;
const BITRATE: u32 = 2_000_000;

pub struct EncoderRun {
    pub cpu_per_frame: Duration,
    pub kbps: f64,
}

pub async fn run(bench: &Bench) -> anyhow::Result<Section> {
    let plan = &bench.plan;
    let mut section = Section::new("Encoders alone");
    section.text(&format!(
        "{} pictures of the benchmark clip (the test pattern with fresh noise in every \
         picture: ±{} levels is a camera indoors in good light, the content of the other \
         sections; ±{} a camera in poor light), {FPS} fps, {} Mbit/s target, each encoder as fast \
         as it goes; the first fifth of the pictures (start-up, first keyframe) is left out of \
         both. openh264: camportal's settings (Constrained Baseline, one thread, a keyframe \
         every 2 s), CPU time of the encoding thread. x264: `ffmpeg -f rawvideo -pix_fmt \
         yuv420p -i clip.yuv -c:v libx264 -preset ultrafast -b:v 2M -pix_fmt yuv420p -f h264 \
         out.h264` (its default threads and keyframe interval), CPU time of the whole process \
         (which also reads the file), a short run's subtracted from a long one's. openh264 \
         paced: the same, each picture handed over on its 30 fps deadline as a camera's comes \
         (the encoder idle in between), which is how the daemon runs it.",
        plan.encoder_frames,
        clip::CAMERA.0,
        clip::LOW_LIGHT.0,
        BITRATE / 1_000_000
    ));
    let mut table = Table::new(&[
        "size",
        "noise",
        "openh264 ms CPU/picture",
        "openh264 paced, ms CPU/picture",
        "x264 ms CPU/picture",
        "openh264 / x264",
        "openh264 kbit/s",
        "x264 kbit/s",
    ]);
    for (&(w, h), noise) in plan
        .sizes
        .iter()
        .flat_map(|size| [(size, clip::CAMERA), (size, clip::LOW_LIGHT)])
    {
        let clip = clip::ensure(&bench.work, w, h, plan.clip_frames, noise)?;
        let frames = plan.encoder_frames;
        let clip_frames = plan.clip_frames;
        let clip2 = clip.clone();
        let fast = tokio::task::spawn_blocking(move || {
            openh264(&clip2, w, h, clip_frames, frames, Pacing::AsFastAsItGoes)
        })
        .await??;
        // Paced at the camera's rate: the content of the other sections only (it takes the
        // pictures' own time, 20 s per size in a full run).
        let paced = if noise == clip::CAMERA {
            let clip2 = clip.clone();
            let run = tokio::task::spawn_blocking(move || {
                openh264(&clip2, w, h, clip_frames, frames, Pacing::RealTime)
            })
            .await??;
            Some(run)
        } else {
            None
        };
        let x264 = x264(&clip, w, h, frames)?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        table.row(vec![
            format!("{w}x{h}"),
            noise.to_string(),
            format!("{:.2}", ms(fast.cpu_per_frame)),
            paced.map_or_else(|| "–".into(), |p| format!("{:.2}", ms(p.cpu_per_frame))),
            format!("{:.2}", ms(x264.cpu_per_frame)),
            format!("{:.2}", ms(fast.cpu_per_frame) / ms(x264.cpu_per_frame)),
            format!("{:.0}", fast.kbps),
            format!("{:.0}", x264.kbps),
        ]);
        eprintln!("  encoders {w}x{h} noise {noise} done");
    }
    section.table(&table);
    Ok(section)
}

/// Encodes `frames` pictures of the clip (looping) with camportal's encoder.
/// How pictures are handed to the encoder.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// The next one as soon as the last is done.
    AsFastAsItGoes,
    /// Each on its deadline at [`FPS`].
    RealTime,
}

pub fn openh264(
    clip: &std::path::Path,
    w: u32,
    h: u32,
    clip_frames: u32,
    frames: u32,
    pacing: Pacing,
) -> anyhow::Result<EncoderRun> {
    let mut file = std::fs::File::open(clip).with_context(|| format!("{}", clip.display()))?;
    let mut encoder = Encoder::new(&EncoderSettings {
        width: w,
        height: h,
        fps: FPS,
        bitrate_bps: BITRATE,
        keyframe_interval_frames: 2 * FPS,
    })?;
    let start = Instant::now();
    let warm = frames / 5;
    let (mut cpu, mut bytes) = (Duration::ZERO, 0usize);
    for i in 0..frames {
        if i % clip_frames == 0 && i > 0 {
            file = std::fs::File::open(clip)?;
        }
        let mut data = vec![0u8; RawFrame::i420_len(w, h)];
        file.read_exact(&mut data)?;
        // Timestamps as if live, so that the rate control sees 30 fps.
        let dt = Duration::from_secs(1) * i / FPS;
        if pacing == Pacing::RealTime
            && let Some(wait) = (start + dt).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        let frame = RawFrame {
            width: w,
            height: h,
            data,
            capture: CaptureTime {
                wall: SystemTime::now(),
                mono: start + dt,
            },
        };
        let before = proc::thread_cpu_time();
        let unit = encoder.encode(&frame, false)?;
        if i >= warm {
            cpu += proc::thread_cpu_time().saturating_sub(before);
            bytes += unit.map_or(0, |u| u.data.len());
        }
    }
    let measured = frames - warm;
    Ok(EncoderRun {
        cpu_per_frame: cpu / measured,
        kbps: bytes as f64 * 8.0 * f64::from(FPS) / f64::from(measured) / 1000.0,
    })
}

/// Encodes `frames` pictures of the clip with ffmpeg/libx264, as fast as it goes; what the
/// first fifth costs (start-up included) is measured by a short run and left out.
fn x264(clip: &std::path::Path, w: u32, h: u32, frames: u32) -> anyhow::Result<EncoderRun> {
    let warm = frames / 5;
    let (long_cpu, long_bytes) = x264_once(clip, w, h, frames)?;
    let (short_cpu, short_bytes) = x264_once(clip, w, h, warm)?;
    let measured = frames - warm;
    let bytes = long_bytes.saturating_sub(short_bytes);
    Ok(EncoderRun {
        cpu_per_frame: long_cpu.saturating_sub(short_cpu) / measured,
        kbps: bytes as f64 * 8.0 * f64::from(FPS) / f64::from(measured) / 1000.0,
    })
}

fn x264_once(
    clip: &std::path::Path,
    w: u32,
    h: u32,
    frames: u32,
) -> anyhow::Result<(Duration, u64)> {
    let out = tempfile::NamedTempFile::new()?;
    let before = proc::children_cpu_time();
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-stream_loop",
            "-1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-s",
            &format!("{w}x{h}"),
            "-framerate",
            &FPS.to_string(),
            "-i",
        ])
        .arg(clip)
        .args(["-frames:v", &frames.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "2M"])
        .args(["-pix_fmt", "yuv420p", "-f", "h264"])
        .arg(out.path())
        .stdout(Stdio::null())
        .status()
        .context("running ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg failed encoding {}", clip.display());
    }
    let cpu = proc::children_cpu_time().saturating_sub(before);
    let bytes = std::fs::metadata(out.path())?.len();
    Ok((cpu, bytes))
}
