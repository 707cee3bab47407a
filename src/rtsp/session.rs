//! A playing RTSP session's media: the path's frames (through the same subscription as a WHEP
//! viewer: from a keyframe on, rejoining a restarted path) as RTP with RTCP sender reports,
//! interleaved on the RTSP connection or to the reader's UDP ports. A reader whose connection
//! cannot take a frame loses it and skips to the next keyframe; nothing waits for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::debug;

use super::sdp::PAYLOAD_TYPE;
use crate::path::{Event, Subscription, VideoFrame};
use crate::rtp::packet;

/// Sender reports go out about this often (players sync and show latency with them).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Where a session's packets go.
pub(super) enum Sink {
    /// `$`-framed on the RTSP connection (its writer's queue): RTP and RTCP channels.
    Tcp {
        out: mpsc::Sender<Bytes>,
        channels: (u8, u8),
    },
    /// From the server's ports to the reader's.
    Udp {
        rtp: Arc<UdpSocket>,
        rtcp: Arc<UdpSocket>,
        to_rtp: SocketAddr,
        to_rtcp: SocketAddr,
    },
}

pub(super) struct Media {
    pub subscription: Subscription,
    pub sink: Sink,
    pub ssrc: u32,
    /// The next packet's sequence number.
    pub sequence: u16,
    /// Added to the media clock: a session's timestamps start anywhere (RFC 3550 §5.1).
    pub rtp_offset: u32,
    packets: u32,
    octets: u32,
    last_report: Option<Instant>,
    /// A frame was lost on the way to the reader: nothing until the next keyframe.
    skipping: bool,
    /// PAUSE: frames are not sent (and the next one sent is a keyframe).
    paused: Arc<AtomicBool>,
}

impl Media {
    pub(super) fn new(
        subscription: Subscription,
        sink: Sink,
        ssrc: u32,
        sequence: u16,
        rtp_offset: u32,
        paused: Arc<AtomicBool>,
    ) -> Media {
        Media {
            subscription,
            sink,
            ssrc,
            sequence,
            rtp_offset,
            packets: 0,
            octets: 0,
            last_report: None,
            skipping: false,
            paused,
        }
    }

    /// Sends until the path is removed (then tells `ended` why) or the task is aborted.
    pub(super) async fn run(mut self, ended: mpsc::Sender<String>) {
        loop {
            match self.subscription.next().await {
                Event::Frame(frame) => self.send(&frame),
                Event::Removed => {
                    let _ = ended
                        .send("the path was removed from the configuration".into())
                        .await;
                    return;
                }
            }
        }
    }

    fn send(&mut self, frame: &VideoFrame) {
        if self.paused.load(Ordering::Relaxed) {
            self.skipping = true;
            return;
        }
        if self.skipping {
            if !frame.keyframe {
                return;
            }
            self.skipping = false;
        }
        let timestamp = self
            .rtp_offset
            .wrapping_add(crate::rtp::clock_90k(frame.capture.mono));
        let last = frame.payloads.len().saturating_sub(1);
        let mut packets = Vec::with_capacity(frame.payloads.len());
        for (index, payload) in frame.payloads.iter().enumerate() {
            let mut packet = Vec::with_capacity(12 + payload.len());
            packet::header(
                &mut packet,
                PAYLOAD_TYPE,
                index == last,
                self.sequence,
                timestamp,
                self.ssrc,
            );
            packet.extend_from_slice(payload);
            self.sequence = self.sequence.wrapping_add(1);
            packets.push(packet);
        }
        if !self.deliver(&packets, false) {
            debug!(
                ssrc = self.ssrc,
                "RTSP reader behind: skipping to the next keyframe"
            );
            self.skipping = true;
            self.subscription.want_keyframe();
            return;
        }
        // Counted once sent: the reports tell what the reader could have received.
        let bytes: usize = packets.iter().map(Vec::len).sum();
        self.subscription.sent(bytes, packets.len() as u64);
        self.packets = self.packets.wrapping_add(packets.len() as u32);
        let octets: usize = frame.payloads.iter().map(|p| p.len()).sum();
        self.octets = self.octets.wrapping_add(octets as u32);
        let due = self
            .last_report
            .is_none_or(|last| last.elapsed() >= REPORT_INTERVAL);
        if due {
            self.last_report = Some(Instant::now());
            let report = packet::sender_report(
                self.ssrc,
                frame.capture.wall,
                timestamp,
                self.packets,
                self.octets,
            );
            self.deliver(&[report.to_vec()], true);
        }
    }

    /// Hands `packets` (RTP, or RTCP with `rtcp`) to the sink without waiting; false if the
    /// reader's connection could not take them.
    fn deliver(&self, packets: &[Vec<u8>], rtcp: bool) -> bool {
        match &self.sink {
            Sink::Tcp { out, channels } => {
                let channel = if rtcp { channels.1 } else { channels.0 };
                let total: usize = packets.iter().map(|p| 4 + p.len()).sum();
                let mut chunk = Vec::with_capacity(total);
                for packet in packets {
                    chunk.push(b'$');
                    chunk.push(channel);
                    // Packets are at most a few KiB: the packetizer splits at the MTU.
                    chunk.extend_from_slice(&(packet.len() as u16).to_be_bytes());
                    chunk.extend_from_slice(packet);
                }
                out.try_send(Bytes::from(chunk)).is_ok()
            }
            Sink::Udp {
                rtp,
                rtcp: rtcp_socket,
                to_rtp,
                to_rtcp,
            } => {
                let (socket, to) = if rtcp {
                    (rtcp_socket, to_rtcp)
                } else {
                    (rtp, to_rtp)
                };
                for packet in packets {
                    // UDP may drop anyway; a full socket buffer drops here rather than waits.
                    let _ = socket.try_send_to(packet, *to);
                }
                true
            }
        }
    }
}
