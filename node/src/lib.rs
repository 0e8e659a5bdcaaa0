//! The RuvDLLM node: the command-line tools a node operator uses (pretrain, finetune, eval,
//! generate, convert) on top of the `ruvdllm` library.

pub mod cli;
pub mod convert_cmd;
pub mod eval_cmd;
pub mod finetune_cmd;
pub mod frozen_a_cmd;
pub mod generate_cmd;
pub mod keygen_cmd;
pub mod model_arg;
pub mod pretrain_cmd;
pub mod sampler_args;
pub mod serve;
pub mod serve_cmd;
