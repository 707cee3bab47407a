//! camportal-viewer: WHEP viewers that watch a camportal path the way a browser does, for the
//! daemon's integration tests, its examples and the benchmark. They live in a crate of their own
//! so that the daemon's build carries neither the async `webrtc` stack nor an HTTP client.
//!
//! - [`Viewer`] (`decoding.rs`): depacketizes, decodes with openh264 and hands out pictures with
//!   the stamp the test pattern draws, so a test sees what a browser would show.
//! - [`LightViewer`] (`light.rs`): ICE, DTLS, SRTP and RTCP, counting what arrives but never
//!   decoding, so that hundreds fit beside the daemon on a small box.
//!
//! Both share one WHEP exchange (`whep.rs`), one offer (`offer.rs`), one choice of local address
//! (`local_address.rs`) and one RTP sequence tracker (`sequence.rs`).

#![deny(unreachable_pub)]

mod assembler;
mod decoder;
mod decoding;
mod light;
mod local_address;
mod offer;
mod sequence;
mod whep;

pub use decoder::{DecodedPicture, Decoder, DecoderError};
pub use decoding::{Viewer, ViewerFrame, ViewerStats};
pub use light::{LightStats, LightViewer};
