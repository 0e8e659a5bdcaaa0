//! The node daemon: a runtime that takes part in federated rounds.
//!
//! [`runtime::Runtime`] drives the protocol through the transport-independent
//! [`client::CoordinatorClient`] (gRPC/mTLS: [`grpc_client::GrpcClient`]) and trains with a
//! [`trainer::LocalTrainer`]; [`backoff`] spaces its retries.

pub mod backoff;
pub mod client;
pub mod grpc_client;
pub mod runtime;
pub mod trainer;

pub use client::{ClientError, CoordinatorClient};
pub use runtime::{NodeError, Runtime, Settings, Status};
pub use trainer::{LocalTrainer, LocalUpdate, RoundInfo, TrainError};
