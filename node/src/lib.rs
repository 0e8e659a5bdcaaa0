//! The RuvDLLM node: the command-line tools a node operator uses (pretrain, eval, generate,
//! convert) on top of the `ruvdllm` library.

pub mod cli;
pub mod pretrain_cmd;
