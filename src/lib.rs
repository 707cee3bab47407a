//! camportal: one daemon that makes the cameras of a small Linux box viewable, live, in a
//! browser elsewhere on the private network, over WebRTC (WHEP).
//!
//! The flow of a picture: a path's source (`source/`) → newest-wins hand-off (`handoff`) →
//! encoder (`encoder`) → fan-out (`path/broadcaster`) → viewers (`whep/viewer`), each a peer
//! connection driven over one shared UDP port (`whep/udp_mux`). Actors (`supervisor`, `path/`,
//! `whep/viewer`) carry control; frames never pass through their mailboxes.
//!
//! The rooms: `config/` (models, loading, the reload difference), `supervisor` (the root actor),
//! `watcher` (signals changes of `config.d/`), `path/` (a path's actor and children), `source/`
//! (where pictures come from), `encoder` (openh264), `rtp/` (H.264 and RTP facts shared by the
//! protocols), `whep/` (WHEP, viewers, the UDP port), `auth/` (who may do what: one decision,
//! applied to every HTTP request), `http/` (router, pages, status API, the accept loop and its
//! limits, TLS), `memory` (heap trimming, the open-file limit), `status` (what
//! the API shows), `daemon` (start and stop).
//!
//! Public is only what the binary, the tests, the benchmark and the test viewers
//! (`camportal-viewer`) use, so that the compiler finds what nothing uses.

#![deny(unreachable_pub)]

mod auth;
mod backoff;
mod bandwidth;
pub mod config;
mod connections;
pub mod daemon;
pub mod devices;
pub mod encoder;
pub mod frame;
mod handoff;
mod http;
mod jpeg;
mod keyframe;
mod memory;
mod metrics;
mod path;
pub mod rtp;
mod rtsp;
mod service;
mod source;
pub mod stamp;
pub mod status;
mod supervisor;
mod watcher;
mod whep;

pub use memory::raise_fd_limit;
pub use path::is_offline_picture;
pub use source::testsrc::TestSrc;
pub use whep::CONNECT_TIMEOUT;
