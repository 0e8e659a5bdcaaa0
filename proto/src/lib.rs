//! RuvDLLM wire protocols.
pub mod p2p;
