//! Many viewers of one path, with the light viewer (real ICE, DTLS and SRTP; counts packets and
//! pictures without decoding): every viewer gets every packet of the stream.

mod support;

use std::time::Duration;

use camportal_viewer::LightViewer;
use support::{TestDaemon, small_path};

const VIEWERS: usize = 12;
const FRAMES: u64 = 45;

#[tokio::test]
async fn a_dozen_light_viewers_get_every_packet() {
    let test = TestDaemon::start(&[("cam", &small_path(640, 480))]).await;
    let url = test.whep_url("cam");
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        viewers.push(LightViewer::connect(&url).await.expect("WHEP session"));
    }
    // Until every viewer has seen FRAMES pictures (an event, with a generous cap).
    for _ in 0..600 {
        if viewers.iter().all(|v| v.stats().frames >= FRAMES) {
            break;
        }
        for viewer in &viewers {
            assert_eq!(viewer.ended(), None, "{}", viewer.session_url());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(test.daemon.board.snapshot().paths[0].viewers, VIEWERS);
    for viewer in &viewers {
        let stats = viewer.stats();
        println!("{stats:?}");
        assert!(stats.frames >= FRAMES, "{stats:?}");
        assert_eq!(stats.lost, 0, "{stats:?}");
        assert!(stats.packets >= stats.frames, "{stats:?}");
    }
    for viewer in viewers {
        viewer.close().await.expect("DELETE");
    }
    for _ in 0..200 {
        if test.daemon.board.snapshot().paths[0].viewers == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(test.daemon.board.snapshot().paths[0].viewers, 0);
    test.daemon.shutdown().await;
}
