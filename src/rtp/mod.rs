//! RTP facts that more than one protocol needs: the H.264 byte stream and its packetization
//! (RFC 6184), and the `abs-capture-time` header extension. WHEP uses them now, RTSP next, and
//! the test viewers read with them what the daemon wrote.

pub mod abs_capture_time;
pub mod h264;
