//! Coordinator library.

pub mod codec_cmd;
