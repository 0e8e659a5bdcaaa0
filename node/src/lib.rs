//! The RuvDLLM node: the federated node daemon ([`daemon`], `node run`), the completion API
//! ([`serve`]) and the command-line tools a node operator uses (pretrain, finetune, eval,
//! generate, convert, keygen) on top of the `ruvdllm` library.

pub mod banks_cmd;
pub mod chat_cmd;
pub mod cli;
pub mod config;
pub mod convert_cmd;
pub mod daemon;
pub mod eval_cmd;
pub mod export_cmd;
pub mod finetune_cmd;
pub mod frozen_a_cmd;
pub mod generate_cmd;
pub mod keygen_cmd;
pub mod model_arg;
pub mod pretrain_cmd;
pub mod run_cmd;
pub mod sampler_args;
pub mod serve;
pub mod serve_cmd;
