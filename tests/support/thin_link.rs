//! A thin link between the daemon and a kiosk, shared by tests/bandwidth.rs and the benchmark's
//! `links` section: the noisy path that needs its bitrate, `tbf` on the daemon's side of a
//! [`Link`], and what the player's video receiver counts (`getStats()`).

use serde_json::Value;

use super::chromium::Page;
use super::netns::Link;

/// A path file: 640x360 at 30 fps with strong temporal noise (the encoder really needs its
/// 2 Mbit/s), raw I420 from ffmpeg; `adaptive`: the encoder follows the viewers' bandwidth.
pub fn noisy_path(adaptive: bool) -> String {
    let adaptive = if adaptive { "yes" } else { "no" };
    format!(
        "source:\n  type: exec\n  format: i420\n  command: \"ffmpeg -hide_banner \
         -loglevel error -nostdin -re -f lavfi \
         -i testsrc2=size=640x360:rate=30,noise=alls=24:allf=t -pix_fmt yuv420p -f rawvideo -\"\n\
         encoding:\n  width: 640\n  height: 360\n  fps: 30\n  bitrate: 2M\n  \
         adaptiveBitrate: {adaptive}\n"
    )
}

/// Captures the player's peer connection, so its `getStats()` can be read.
pub const KEEP_PC: &str = "(() => { const Orig = window.RTCPeerConnection; \
    window.RTCPeerConnection = function (...args) { \
      const pc = new Orig(...args); window.__pc = pc; return pc; }; \
    window.RTCPeerConnection.prototype = Orig.prototype; })();";

/// What the player's video receiver has counted so far (`getStats()`, inbound-rtp).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inbound {
    pub frames: f64,
    pub freezes: f64,
    /// Seconds frozen in all.
    pub frozen: f64,
    pub bytes: f64,
    pub lost: f64,
    pub nacks: f64,
    pub plis: f64,
    pub keyframes: f64,
    pub width: f64,
}

impl Inbound {
    /// What happened between `self` and a later reading, `secs` apart, as one line.
    pub fn since(&self, before: &Inbound, secs: f64) -> String {
        format!(
            "{:.0} fps, {:.0} kbit/s, {} freezes ({:.2} s), {} lost, {} NACKs, {} PLIs, \
             {} keyframes, {} px wide",
            (self.frames - before.frames) / secs,
            (self.bytes - before.bytes) * 8.0 / secs / 1000.0,
            self.freezes - before.freezes,
            self.frozen - before.frozen,
            self.lost - before.lost,
            self.nacks - before.nacks,
            self.plis - before.plis,
            self.keyframes - before.keyframes,
            self.width,
        )
    }
}

pub async fn inbound(page: &Page) -> Inbound {
    let stats = page
        .eval(
            "(async () => { if (!window.__pc) return null; \
               const stats = await window.__pc.getStats(); let out = null; \
               stats.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') \
                 out = [r.framesDecoded, r.freezeCount, r.totalFreezesDuration, \
                        r.bytesReceived, r.packetsLost, r.nackCount, r.pliCount, \
                        r.keyFramesDecoded, r.frameWidth]; }); \
               return out; })()",
        )
        .await
        .expect("getStats");
    let get = |i: usize| stats.get(i).and_then(Value::as_f64).unwrap_or(0.0);
    Inbound {
        frames: get(0),
        freezes: get(1),
        frozen: get(2),
        bytes: get(3),
        lost: get(4),
        nacks: get(5),
        plis: get(6),
        keyframes: get(7),
        width: get(8),
    }
}

/// Shapes what the daemon sends to `kbit` kbit/s (`tbf` on its end of the veth pair, a bucket
/// of `burst_kbit`, 300 ms of queue: what a thin uplink's buffer holds); a link already shaped
/// is changed in place.
pub fn shape(link: &Link, kbit: u32, burst_kbit: u32) {
    let args = format!(
        "qdisc replace dev cp-server root tbf rate {kbit}kbit burst {burst_kbit}kbit latency 300ms"
    );
    let status = link
        .server
        .command("tc")
        .args(args.split_whitespace())
        .status()
        .expect("tc (iproute2) runs");
    assert!(status.success(), "tc {args} failed");
}
