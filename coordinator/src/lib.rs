//! Coordinator library.

pub mod aggregate_cmd;
pub mod cli;
pub mod codec_cmd;
#[cfg(feature = "sim")]
pub mod sim;
