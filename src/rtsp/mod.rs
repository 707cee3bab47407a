//! RTSP server: MediaMTX's `rtsp://HOST:8554/<path>` for NVRs, VLC, ffmpeg and dashboards,
//! serving each path's H.264 (the access units the WHEP viewers get, encoded once) over RTP
//! interleaved on the RTSP connection or to the reader's UDP ports. The pure pieces live here:
//! the SDP a DESCRIBE answers (`sdp`), the `Transport` header of a SETUP (`transport`) and
//! Digest authentication (`digest`); messages are parsed and written with `rtsp-types`.

mod connection;
mod digest;
mod sdp;
mod server;
mod session;
mod transport;

pub(crate) use server::{Rtsp, UdpPorts, serve};
pub(crate) use transport::Allowed;
