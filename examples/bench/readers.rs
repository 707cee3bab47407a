//! Other readers than WHEP: the daemon's CPU with one WHEP viewer, then an RTSP reader (ffmpeg,
//! copying) and an MJPEG reader added; and the time from RTSP PLAY to the first frame (a
//! keyframe) with the independent client retina, over TCP and UDP.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use camportal_viewer::LightViewer;
use futures_util::StreamExt;
use retina::client::{
    PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
    UdpTransportOptions,
};
use retina::codec::CodecItem;

use crate::Bench;
use crate::daemon::Daemon;
use crate::pipeline::wait_for_frames;
use crate::proc::CpuMeter;
use crate::report::{Section, Table};
use crate::stats::percentile;

const SETTLE: Duration = Duration::from_secs(2);
/// RTSP joins per transport.
const JOINS: usize = 20;
/// Between joins: longer than the keyframe policy's merging interval (300 ms), so that each
/// join's keyframe is forced at once rather than merged with the previous join's.
const BETWEEN_JOINS: Duration = Duration::from_millis(700);

/// PLAY → the first frame, in ms.
async fn first_frame_ms(url: &str, tcp: bool) -> anyhow::Result<f64> {
    let mut session = Session::describe(url.parse()?, SessionOptions::default()).await?;
    let transport = if tcp {
        Transport::Tcp(TcpTransportOptions::default())
    } else {
        Transport::Udp(UdpTransportOptions::default())
    };
    session
        .setup(0, SetupOptions::default().transport(transport))
        .await?;
    let asked = Instant::now();
    let mut frames = session.play(PlayOptions::default()).await?.demuxed()?;
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), frames.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the RTSP stream ended"))??;
        if let CodecItem::VideoFrame(frame) = item {
            anyhow::ensure!(
                frame.is_random_access_point(),
                "the first frame is no keyframe"
            );
            return Ok(asked.elapsed().as_secs_f64() * 1000.0);
        }
    }
}

pub async fn run(bench: &Bench) -> anyhow::Result<Section> {
    let window = Duration::from_secs(bench.plan.idle_secs);
    let daemon = Daemon::start_in(&bench.camportal, &bench.shipped_config).await?;
    daemon.wait_running("test").await?;
    let pid = daemon.pid();
    let viewer = LightViewer::connect(&daemon.whep_url("test")).await?;
    wait_for_frames(&viewer).await?;
    tokio::time::sleep(SETTLE).await;
    let measure = async || -> anyhow::Result<f64> {
        let meter = CpuMeter::start(pid)?;
        tokio::time::sleep(window).await;
        Ok(meter.read()?.cores() * 100.0)
    };
    let whep = measure().await?;

    let rtsp_url = format!("{}/test", daemon.rtsp_base);
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-v", "error", "-rtsp_transport", "tcp", "-i", &rtsp_url])
        .args(["-c", "copy", "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    tokio::time::sleep(SETTLE).await;
    let with_rtsp = measure().await;

    let mjpeg_url = format!("{}/test/stream.mjpeg", daemon.base);
    let reading = tokio::spawn(async move {
        let mut response = reqwest::get(mjpeg_url).await?;
        let mut bytes = 0usize;
        while let Some(chunk) = response.chunk().await? {
            bytes += chunk.len();
        }
        anyhow::Ok(bytes)
    });
    tokio::time::sleep(SETTLE).await;
    let with_mjpeg = measure().await;
    reading.abort();
    // Our own child, by its PID.
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let (with_rtsp, with_mjpeg) = (with_rtsp?, with_mjpeg?);

    let mut joins = Vec::new();
    for tcp in [true, false] {
        let mut times = Vec::with_capacity(JOINS);
        for _ in 0..JOINS {
            tokio::time::sleep(BETWEEN_JOINS).await;
            times.push(first_frame_ms(&rtsp_url, tcp).await?);
        }
        joins.push((if tcp { "TCP" } else { "UDP" }, times));
    }
    let _ = viewer.close().await;
    drop(daemon);

    let mut section = Section::new("Readers besides WHEP");
    section.text(&format!(
        "The release daemon with the shipped `config.d/` (1280x720 30 fps test pattern, 2 Mbit/s) \
         and one WHEP viewer (light); then an RTSP reader (ffmpeg over TCP, `-c copy`: it only \
         receives) and an MJPEG reader (`stream.mjpeg`, every picture, read and dropped) are \
         added. The daemon's own CPU in % of one core over {} s each.",
        window.as_secs()
    ));
    let mut table = Table::new(&["readers", "daemon CPU %", "added by the last reader"]);
    table.row(vec!["1 WHEP".into(), format!("{whep:.1}"), "–".into()]);
    table.row(vec![
        "1 WHEP + 1 RTSP".into(),
        format!("{with_rtsp:.1}"),
        format!("{:+.1}", with_rtsp - whep),
    ]);
    table.row(vec![
        "1 WHEP + 1 RTSP + 1 MJPEG".into(),
        format!("{with_mjpeg:.1}"),
        format!("{:+.1}", with_mjpeg - with_rtsp),
    ]);
    section.table(&table);
    section.text(&format!(
        "RTSP PLAY → first frame received (a keyframe, SPS and PPS in it), {JOINS} joins per \
         transport with retina while the WHEP viewer watches (the encoder runs; the join forces \
         a keyframe rather than waiting for the next periodic one, 2 s apart), {} ms apart.",
        BETWEEN_JOINS.as_millis()
    ));
    let mut table = Table::new(&["transport", "p50 ms", "p99 ms"]);
    for (transport, mut times) in joins {
        times.sort_by(f64::total_cmp);
        table.row(vec![
            transport.into(),
            format!("{:.1}", percentile(&times, 50.0).unwrap_or(f64::NAN)),
            format!("{:.1}", percentile(&times, 99.0).unwrap_or(f64::NAN)),
        ]);
    }
    section.table(&table);
    Ok(section)
}
