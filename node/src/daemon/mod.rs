//! The node daemon: a runtime that takes part in federated rounds.
//!
//! [`runtime::Runtime`] drives the protocol through the transport-independent
//! [`client::CoordinatorClient`] (gRPC/mTLS: [`grpc_client::GrpcClient`]; libp2p:
//! [`p2p_client::P2pClient`]; either, picked from config: [`any_client::AnyClient`]) and trains with a
//! [`trainer::LocalTrainer`] — in production the TALoRA trainer
//! ([`talora_trainer::TaloraTrainer`]) on the node's [`local_data`]; [`backoff`] spaces its
//! retries.

pub mod any_client;
pub mod backoff;
pub mod client;
pub mod counting;
pub mod grpc_client;
pub mod journal;
pub mod local_data;
pub mod p2p_client;
pub mod privacy;
pub mod runtime;
pub mod serving;
pub mod talora_trainer;
pub mod trainer;

pub use client::{ClientError, CoordinatorClient};
pub use runtime::{Global, GlobalHandle, NodeError, Runtime, Settings, Status};
pub use talora_trainer::{RoundStats, TaloraTrainer, TrainerError};
pub use trainer::{LocalTrainer, LocalUpdate, RoundInfo, TrainError};
