//! Coordinator library.

pub mod aggregate_cmd;
pub mod codec_cmd;
