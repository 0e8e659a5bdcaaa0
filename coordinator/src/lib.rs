//! Coordinator library: the round state machine ([`round`]), its durable store ([`store`]), the
//! transport-independent [`service`], the gRPC/mTLS adapter ([`grpc`]) and the libp2p adapter ([`p2p`]), certificates ([`certs`],
//! [`auth`]), metrics, config and the daemon, plus the offline tools (aggregate, codec).

pub mod aggregate_cmd;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod codec_cmd;
pub mod config;
pub mod daemon;
pub mod grpc;
pub mod metrics;
pub mod p2p;
pub mod round;
pub mod run_cmd;
pub mod service;
#[cfg(feature = "sim")]
pub mod sim;
pub mod socket;
pub mod store;
