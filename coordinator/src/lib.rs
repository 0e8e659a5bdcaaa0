//! Coordinator library.

pub mod aggregate_cmd;
