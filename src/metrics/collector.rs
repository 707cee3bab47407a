//! The series `/metrics` shows, computed on each scrape from the state `/api/paths` shows and
//! the counters the data plane keeps: a removed path or a closed session simply is not there
//! next time, so nothing stale lingers.
//!
//! MediaMTX's names where the meaning matches (`paths`, `paths_readers`, `paths_outbound_bytes`,
//! `webrtc_sessions*`, `rtsp_sessions`), typed as gauges so the names stay exactly MediaMTX's
//! (OpenMetrics would add `_total` to a counter); camportal's own under `camportal_`.

use std::fmt::Error;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;

use super::counters::{CHILDREN, DaemonCounters, KeyframeReason, PathCounters};
use crate::status::{PathState, Snapshot};

/// One WHEP session as a scrape sees it.
#[derive(Debug)]
pub(crate) struct SessionView {
    pub id: String,
    pub path: String,
    pub remote: IpAddr,
    pub connected: bool,
    pub bytes: u64,
    pub packets: u64,
}

/// Everything one scrape shows, gathered at once.
#[derive(Debug)]
pub(crate) struct Scrape {
    pub snapshot: Snapshot,
    pub counters: Vec<(String, Arc<PathCounters>)>,
    pub daemon: Arc<DaemonCounters>,
    pub sessions: Vec<SessionView>,
    /// Series per WHEP session (`?sessions=1`) rather than per path: many series under churn.
    pub per_session: bool,
}

/// MediaMTX's path states.
fn mediamtx_state(state: PathState) -> &'static str {
    if state == PathState::Running {
        "ready"
    } else {
        "notReady"
    }
}

fn gauge<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'a str, String)>, i64)>,
) -> Result<(), Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'a str, String)>, u64)>,
) -> Result<(), Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One histogram per path, `pick`ed from its counters.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    paths: &[(String, Arc<PathCounters>)],
    pick: fn(&PathCounters) -> &Histogram,
) -> Result<(), Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (path, counters) in paths {
        pick(counters).encode(family.encode_family(&[("name", path.as_str())])?)?;
    }
    Ok(())
}

fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Scrape {
    fn counters_of(&self, name: &str) -> Option<&PathCounters> {
        self.counters
            .iter()
            .find(|(path, _)| path == name)
            .map(|(_, counters)| counters.as_ref())
    }

    fn encode_paths(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), Error> {
        let paths = &self.snapshot.paths;
        let labels = |name: &str, state: PathState| {
            vec![
                ("name", name.to_owned()),
                ("state", mediamtx_state(state).to_owned()),
            ]
        };
        gauge(
            encoder,
            "paths",
            "Configured paths (state ready: its source delivers pictures).",
            paths.iter().map(|p| (labels(&p.name, p.state), 1)),
        )?;
        gauge(
            encoder,
            "paths_readers",
            "Readers of the path: WHEP viewers, RTSP sessions and MJPEG streams.",
            paths.iter().map(|p| {
                let r = p.readers;
                (
                    labels(&p.name, p.state),
                    (r.webrtc + r.rtsp + r.mjpeg) as i64,
                )
            }),
        )?;
        gauge(
            encoder,
            "paths_outbound_bytes",
            "Bytes sent to the path's readers since the path (re)started.",
            paths.iter().map(|p| {
                let bytes = self.counters_of(&p.name).map_or(0, |c| c.sent.bytes());
                (labels(&p.name, p.state), saturating(bytes))
            }),
        )?;
        gauge(
            encoder,
            "rtsp_sessions",
            "RTSP sessions reading the path.",
            paths
                .iter()
                .map(|p| (vec![("path", p.name.clone())], p.readers.rtsp as i64)),
        )
    }

    fn encode_sessions(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), Error> {
        type Series<'a> = Vec<(Vec<(&'a str, String)>, i64)>;
        let (mut count, mut bytes, mut packets): (Series, Series, Series) = Default::default();
        if self.per_session {
            for s in &self.sessions {
                let labels = vec![
                    ("id", s.id.clone()),
                    ("path", s.path.clone()),
                    ("remoteAddr", s.remote.to_string()),
                    (
                        "state",
                        if s.connected { "read" } else { "connecting" }.to_owned(),
                    ),
                ];
                count.push((labels.clone(), 1));
                bytes.push((labels.clone(), saturating(s.bytes)));
                packets.push((labels, saturating(s.packets)));
            }
        } else {
            // One series per path, every configured path listed (0 without sessions).
            for p in &self.snapshot.paths {
                let mine = self.sessions.iter().filter(|s| s.path == p.name);
                let (n, b, k) = mine.fold((0i64, 0u64, 0u64), |(n, b, k), s| {
                    (n + 1, b + s.bytes, k + s.packets)
                });
                let labels = vec![("path", p.name.clone())];
                count.push((labels.clone(), n));
                bytes.push((labels.clone(), saturating(b)));
                packets.push((labels, saturating(k)));
            }
        }
        gauge(encoder, "webrtc_sessions", "WHEP sessions.", count)?;
        gauge(
            encoder,
            "webrtc_sessions_outbound_bytes",
            "Bytes the WHEP sessions that exist now have sent (RTP, RTCP, DTLS).",
            bytes,
        )?;
        gauge(
            encoder,
            "webrtc_sessions_outbound_rtp_packets",
            "RTP packets the WHEP sessions that exist now have sent.",
            packets,
        )
    }

    fn encode_own(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), Error> {
        let name = |path: &str| vec![("name", path.to_owned())];
        counter(
            encoder,
            "camportal_capture_frames",
            "Pictures the path's source delivered.",
            self.counters
                .iter()
                .map(|(path, c)| (name(path), c.capture_frames.load(Ordering::Relaxed))),
        )?;
        counter(
            encoder,
            "camportal_path_restarts",
            "Restarts of a path's child after it failed (capture: the source failed or \
             stalled).",
            self.counters.iter().flat_map(|(path, c)| {
                CHILDREN.iter().zip(&c.restarts).map(|(child, n)| {
                    let mut labels = name(path);
                    labels.push(("child", (*child).to_owned()));
                    (labels, n.load(Ordering::Relaxed))
                })
            }),
        )?;
        counter(
            encoder,
            "camportal_keyframes",
            "Keyframes the path's encoder made, by why.",
            self.counters.iter().flat_map(|(path, c)| {
                KeyframeReason::ALL.iter().map(|reason| {
                    let mut labels = name(path);
                    labels.push(("reason", reason.label().to_owned()));
                    (labels, c.keyframes(*reason))
                })
            }),
        )?;
        histogram(
            encoder,
            "camportal_encode_seconds",
            "Time openh264 took per picture.",
            &self.counters,
            |c| &c.encode_seconds,
        )?;
        histogram(
            encoder,
            "camportal_capture_to_send_seconds",
            "Time from a picture's capture to its packets being ready to send.",
            &self.counters,
            |c| &c.capture_to_send_seconds,
        )?;
        let reloads = &self.daemon;
        counter(
            encoder,
            "camportal_config_reloads",
            "Reloads of config.d/, by whether every file parsed.",
            [
                (
                    vec![("result", "ok".to_owned())],
                    reloads.reloads_ok.load(Ordering::Relaxed),
                ),
                (
                    vec![("result", "error".to_owned())],
                    reloads.reloads_error.load(Ordering::Relaxed),
                ),
            ],
        )
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), Error> {
        self.encode_paths(&mut encoder)?;
        self.encode_sessions(&mut encoder)?;
        self.encode_own(&mut encoder)
    }
}

/// The scrape as OpenMetrics text.
pub(crate) fn render(scrape: Scrape) -> Result<String, Error> {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{PathStatus, Readers};

    fn scrape(per_session: bool) -> Scrape {
        let mut cam = PathStatus::invalid("cam", String::new());
        cam.state = PathState::Running;
        cam.readers = Readers {
            webrtc: 1,
            rtsp: 2,
            mjpeg: 0,
        };
        let counters = Arc::new(PathCounters::default());
        counters.sent.add(1000, 3);
        counters.captured();
        counters.keyframe(KeyframeReason::Join);
        counters.encoded_in(std::time::Duration::from_millis(3));
        Scrape {
            snapshot: Snapshot {
                paths: vec![cam, PathStatus::invalid("broken", "bad".into())],
                config_errors: vec![],
            },
            counters: vec![("cam".into(), counters)],
            daemon: Arc::default(),
            sessions: vec![SessionView {
                id: "s1".into(),
                path: "cam".into(),
                remote: IpAddr::from([192, 168, 1, 5]),
                connected: true,
                bytes: 500,
                packets: 4,
            }],
            per_session,
        }
    }

    #[test]
    fn mediamtx_series_keep_their_names() {
        let text = render(scrape(false)).unwrap();
        for line in [
            "paths{name=\"cam\",state=\"ready\"} 1",
            "paths{name=\"broken\",state=\"notReady\"} 1",
            "paths_readers{name=\"cam\",state=\"ready\"} 3",
            "paths_outbound_bytes{name=\"cam\",state=\"ready\"} 1000",
            "rtsp_sessions{path=\"cam\"} 2",
            "webrtc_sessions{path=\"cam\"} 1",
            "webrtc_sessions{path=\"broken\"} 0",
            "webrtc_sessions_outbound_bytes{path=\"cam\"} 500",
            "webrtc_sessions_outbound_rtp_packets{path=\"cam\"} 4",
            "camportal_capture_frames_total{name=\"cam\"} 1",
            "camportal_keyframes_total{name=\"cam\",reason=\"join\"} 1",
            "camportal_keyframes_total{name=\"cam\",reason=\"pli\"} 0",
            "camportal_path_restarts_total{name=\"cam\",child=\"capture\"} 0",
            "camportal_encode_seconds_count{name=\"cam\"} 1",
            "camportal_config_reloads_total{result=\"ok\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(!text.contains("s1"), "no session ids unless asked");
    }

    #[test]
    fn per_session_series_only_when_asked() {
        let text = render(scrape(true)).unwrap();
        let line = "webrtc_sessions_outbound_bytes{id=\"s1\",path=\"cam\",\
                    remoteAddr=\"192.168.1.5\",state=\"read\"} 500";
        assert!(text.lines().any(|l| l == line), "{text}");
    }
}
