//! `coordinator simulate`: federated rounds of many nodes on one machine over real loopback
//! sockets, with a round table, `report.json` and SVG plots.
//!
//! Nothing is shortcut: the real coordinator daemon (round machine, durable store, DAF
//! aggregation) serves gRPC with mutual TLS (or libp2p with `--transport libp2p`) on `127.0.0.1`, and every node is the real node
//! runtime with the real TALoRA trainer, codec and error feedback, either in this process
//! ([`inprocess`], where its socket is counted and its rounds observed) or as its own OS process
//! ([`processes`]). Attackers collude through an in-process [`board`]; the held-out figures are
//! `node eval`'s ([`evaluate`]).
//!
//! * [`config`] — flags and their validation; [`cluster`] — output folder, PKI, settings, data;
//! * [`node`] — the observing trainer and client wrappers; [`events`] — what they record;
//! * [`run`](mod@run) — the run from flags to report; [`record`] — one round's row; [`centralized`] —
//!   the baseline; [`report`], [`plot`] — outputs; [`cmd`] — the CLI with progress bars.

pub mod board;
pub mod centralized;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod evaluate;
pub mod events;
pub mod inprocess;
pub mod node;
pub mod plot;
pub mod processes;
pub mod record;
pub mod report;
pub mod run;

pub use config::{SimArgs, SimConfig, SimConfigError, Transport};
pub use report::Report;
pub use run::{Observer, run};
