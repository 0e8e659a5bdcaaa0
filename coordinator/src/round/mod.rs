//! Rounds: the pure state machine that decides who may submit, when a round closes and what the
//! next global adapter is.
//!
//! [`Machine`] takes [`Event`]s with an explicit `now` and returns [`Action`]s; [`close`] holds the
//! aggregation step; [`state`] is what is persisted; [`Reject`] is every refusal. No I/O here.

pub mod close;
pub mod dp;
mod machine;
mod reject;
pub mod state;

pub use close::{CloseReport, GroupSummary, Screen};
pub use dp::CentralDp;
pub use machine::{Action, Config, Event, Machine, Participation, Sampling, Submission};
pub use reject::Reject;
pub use state::{AcceptedMeta, RoundState};

#[cfg(test)]
mod tests;
