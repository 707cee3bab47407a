//! RTSP as NVRs, VLC and dashboards read it: Debian's ffmpeg over TCP and UDP, GStreamer's
//! rtspsrc, the independent Rust client retina (SDP, sender reports, keyframe first); a path
//! restart and removal under a reader; bad requests; connection floods; sign-in.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use retina::client::{
    Credentials, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, ParametersRef};
use support::{TestDaemon, small_path};

fn url(test: &TestDaemon, path: &str) -> String {
    format!(
        "rtsp://{}/{path}",
        test.daemon.rtsp_addr.expect("RTSP is on")
    )
}

/// Runs `program` with `args`; `Ok(wall time)` if it exits 0, else its stderr.
fn run(program: &str, args: &[&str], install: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} not found ({e}): run `apt-get install {install}`"));
    if output.status.success() {
        Ok(started.elapsed())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn ffmpeg_reads(url: &str, transport: &str, frames: u32) -> Result<Duration, String> {
    let frames = frames.to_string();
    run(
        "timeout",
        &[
            "30",
            "ffmpeg",
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-i",
            url,
            "-frames:v",
            &frames,
            "-f",
            "null",
            "-",
        ],
        "ffmpeg",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_decodes_the_path_over_tcp_and_udp() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let url = url(&test, "cam");
    for transport in ["tcp", "udp"] {
        // The first frame (process start, DESCRIBE, SETUP, PLAY, keyframe, decode).
        let first = tokio::task::spawn_blocking({
            let url = url.clone();
            move || ffmpeg_reads(&url, transport, 1)
        });
        let first = first
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("ffmpeg over {transport}: {e}"));
        println!(
            "ffmpeg over {transport}: first frame decoded {} ms after start",
            first.as_millis()
        );
        // Ninety frames in a row, while the reader is counted.
        let reading = tokio::task::spawn_blocking({
            let url = url.clone();
            move || ffmpeg_reads(&url, transport, 90)
        });
        test.wait_for("one RTSP reader listed", |s| {
            s.paths
                .iter()
                .any(|p| p.name == "cam" && p.readers.rtsp == 1)
        })
        .await;
        reading
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("ffmpeg over {transport}: {e}"));
        test.wait_for("no RTSP reader listed", |s| {
            s.paths
                .iter()
                .any(|p| p.name == "cam" && p.readers.rtsp == 0)
        })
        .await;
    }
}

#[tokio::test]
async fn gstreamer_rtspsrc_decodes_the_path() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let location = format!("location={}", url(&test, "cam"));
    let result = tokio::task::spawn_blocking(move || {
        run(
            "timeout",
            &[
                "30",
                "gst-launch-1.0",
                "-q",
                "rtspsrc",
                &location,
                "protocols=tcp",
                "latency=0",
                "!",
                "rtph264depay",
                "!",
                "avdec_h264",
                "!",
                "identity",
                "eos-after=30",
                "!",
                "fakesink",
            ],
            "gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-libav",
        )
    })
    .await
    .unwrap();
    result.expect("GStreamer decodes 30 frames");
}

/// A retina session on `url`, set up over TCP and playing, demuxed into frames.
async fn retina_play(
    url: &str,
    creds: Option<Credentials>,
) -> Result<(retina::client::Demuxed, (u32, u32)), retina::Error> {
    let options = SessionOptions::default().creds(creds);
    let mut session = Session::describe(url.parse().expect("URL"), options).await?;
    let stream = &session.streams()[0];
    assert_eq!(stream.media(), "video");
    assert_eq!(stream.encoding_name(), "h264");
    // The size is known from the SDP's sprop-parameter-sets, before any packet.
    let size = match stream.parameters() {
        Some(ParametersRef::Video(video)) => video.pixel_dimensions(),
        other => panic!("no video parameters in the SDP: {other:?}"),
    };
    session
        .setup(
            0,
            SetupOptions::default().transport(Transport::Tcp(TcpTransportOptions::default())),
        )
        .await?;
    let playing = session.play(PlayOptions::default()).await?;
    Ok((playing.demuxed()?, size))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retina_sees_the_sdp_a_keyframe_first_and_sender_reports() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let (mut frames, size) = retina_play(&url(&test, "cam"), None).await.expect("plays");
    assert_eq!(size, (320, 240));
    let (mut pictures, mut reports) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pictures < 75 {
        let item = tokio::time::timeout_at(deadline, frames.next())
            .await
            .expect("frames keep coming")
            .expect("the stream goes on")
            .expect("no error");
        match item {
            CodecItem::VideoFrame(frame) => {
                if pictures == 0 {
                    assert!(
                        frame.is_random_access_point(),
                        "the first frame is a keyframe"
                    );
                }
                pictures += 1;
            }
            CodecItem::Rtcp(rtcp) if rtcp.rtp_timestamp().is_some() => reports += 1,
            _ => {}
        }
    }
    assert!(reports >= 1, "no sender report in 75 frames at 30 fps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_path_keeps_its_rtsp_reader_and_a_removed_one_ends_it() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let (mut frames, _) = retina_play(&url(&test, "cam"), None).await.expect("plays");
    let mut next_picture = async |within: Duration| loop {
        match tokio::time::timeout(within, frames.next()).await {
            Ok(Some(Ok(CodecItem::VideoFrame(frame)))) => return Some(frame),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) | Err(_) => return None,
        }
    };
    assert!(next_picture(Duration::from_secs(5)).await.is_some());
    // A new size restarts the path: the same RTSP session carries on with it.
    test.write_path("cam", &small_path(160, 120));
    test.wait_for("the path restarted at 160x120", |s| {
        s.paths
            .iter()
            .any(|p| p.name == "cam" && p.width == 160 && p.restarts == 0)
    })
    .await;
    let mut after = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while after < 30 && Instant::now() < deadline {
        if next_picture(Duration::from_secs(5)).await.is_some() {
            after += 1;
        }
    }
    assert!(after >= 30, "only {after} frames after the restart");
    assert_eq!(test.status("cam").expect("listed").readers.rtsp, 1);

    // Removed: the server closes the session's connection.
    test.remove_path("cam");
    let ended = async { while next_picture(Duration::from_secs(10)).await.is_some() {} };
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the reader's session ends when its path is removed");
}

/// Sends `request` on a new connection and returns the first response's head.
fn exchange(address: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_floods_get_clear_answers_and_readers_play_on() {
    let test = TestDaemon::start(&[("cam", &small_path(160, 120))]).await;
    let address = test.daemon.rtsp_addr.unwrap();
    let base = format!("rtsp://{address}");
    let cases = [
        (
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "RTSP/1.0 400",
        ),
        ("garbage\r\n\r\n".to_string(), "RTSP/1.0 400"),
        (
            format!("OPTIONS {base}/cam RTSP/1.0\r\n\r\n"),
            "RTSP/1.0 400",
        ),
        (
            format!("OPTIONS {base}/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
            "RTSP/1.0 200",
        ),
        (
            format!("DESCRIBE {base}/nope RTSP/1.0\r\nCSeq: 2\r\n\r\n"),
            "RTSP/1.0 404",
        ),
        (
            format!("ANNOUNCE {base}/cam RTSP/1.0\r\nCSeq: 3\r\n\r\n"),
            "RTSP/1.0 405",
        ),
        (
            format!("PLAY {base}/cam RTSP/1.0\r\nCSeq: 4\r\nSession: nope\r\n\r\n"),
            "RTSP/1.0 454",
        ),
        (
            format!(
                "SETUP {base}/cam/trackID=0 RTSP/1.0\r\nCSeq: 5\r\nTransport: RTP/AVP;multicast\r\n\r\n"
            ),
            "RTSP/1.0 461",
        ),
    ];
    // A reader plays through all of it.
    let (mut frames, _) = retina_play(&url(&test, "cam"), None).await.expect("plays");
    for (request, expected) in &cases {
        let sent = request.clone();
        let answer = tokio::task::spawn_blocking(move || exchange(address, &sent))
            .await
            .unwrap();
        assert!(answer.starts_with(expected), "{request:?} → {answer:?}");
        assert!(answer.contains("CSeq: "), "{answer}");
    }
    // 40 connections from one address: those over its 32 are told 503 at once.
    let flood = tokio::task::spawn_blocking(move || {
        let mut open = Vec::new();
        let mut refused = 0;
        for _ in 0..40 {
            let mut stream = TcpStream::connect(address).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut head = [0u8; 64];
            if let Ok(n) = stream.read(&mut head)
                && head[..n].starts_with(b"RTSP/1.0 503")
            {
                refused += 1;
            }
            open.push(stream);
        }
        refused
    })
    .await
    .unwrap();
    assert!(flood >= 8, "only {flood} of 40 connections refused");
    let mut pictures = 0;
    while pictures < 10 {
        match tokio::time::timeout(Duration::from_secs(5), frames.next()).await {
            Ok(Some(Ok(CodecItem::VideoFrame(_)))) => pictures += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("the reader stopped during the flood: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_sign_in_with_basic_or_digest() {
    let test = TestDaemon::start_with(&[("lobby", &small_path(160, 120))], |server| {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(
            file.path(),
            "authInternalUsers:\n- user: kiosk\n  pass: lobbypass\n  permissions:\n  - action: read\n",
        )
        .expect("write");
        server.auth_users = camportal::config::load_server_file(file.path())
            .expect("parses")
            .auth_users;
    })
    .await;
    let address = test.daemon.rtsp_addr.unwrap();
    let plain = format!("rtsp://{address}/lobby");
    let answer = tokio::task::spawn_blocking({
        let request = format!("DESCRIBE {plain} RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        move || exchange(address, &request)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("RTSP/1.0 401"), "{answer}");
    assert!(
        answer.contains("WWW-Authenticate: Digest realm=\"camportal\""),
        "{answer}"
    );
    assert!(
        answer.contains("WWW-Authenticate: Basic realm=\"camportal\""),
        "{answer}"
    );

    // ffmpeg answers the Digest challenge; retina too.
    let signed_in = format!("rtsp://kiosk:lobbypass@{address}/lobby");
    tokio::task::spawn_blocking(move || ffmpeg_reads(&signed_in, "tcp", 5))
        .await
        .unwrap()
        .expect("ffmpeg signs in");
    let wrong = format!("rtsp://kiosk:wrong@{address}/lobby");
    let refused = tokio::task::spawn_blocking(move || ffmpeg_reads(&wrong, "tcp", 5))
        .await
        .unwrap();
    assert!(refused.is_err(), "a wrong password plays");
    let creds = Credentials {
        username: "kiosk".into(),
        password: "lobbypass".into(),
    };
    let (mut frames, _) = retina_play(&plain, Some(creds))
        .await
        .expect("retina signs in");
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), frames.next()).await,
        Ok(Some(Ok(_)))
    ));
}
