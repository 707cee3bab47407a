//! camportal: one daemon that makes the cameras of a small Linux box viewable, live, in a
//! browser elsewhere on the private network, over WebRTC (WHEP).
//!
//! The flow of a picture: a path's source (`source/`) → newest-wins hand-off (`handoff`) →
//! encoder (`encoder`) → fan-out (`path::broadcaster`) → viewers (`viewer`), each a peer
//! connection driven over one shared UDP port (`whep::udp_mux`). Actors (`supervisor`, `path`,
//! `viewer`) carry control; frames never pass through their mailboxes.

pub mod backoff;
pub mod client;
pub mod config;
pub mod daemon;
pub mod decoder;
pub mod devices;
pub mod encoder;
pub mod frame;
pub mod handoff;
pub mod http;
pub mod keyframe;
pub mod light_viewer;
pub mod path;
pub mod source;
pub mod stamp;
pub mod status;
pub mod supervisor;
pub mod viewer;
pub mod watcher;
pub mod whep;
