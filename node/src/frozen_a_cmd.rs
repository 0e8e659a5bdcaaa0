//! `node frozen-a-digest` (hidden): prints the SHA-256 of every frozen A of a TALoRA adapter for a
//! preset's shape. Two processes — two nodes — must print the same digest for the same run seed;
//! the integration tests run it as separate processes and compare.

use clap::Args;
use ruvdllm::adapter::{Shape, Spec, Talora, Target};
use ruvdllm::model::Config;

#[derive(Args, Debug)]
pub struct FrozenAArgs {
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    #[arg(long, default_value_t = 0)]
    pub run_seed: u64,
    #[arg(long, default_value = "8,4,2")]
    pub ranks: String,
    #[arg(long, default_value = "q,v")]
    pub targets: String,
}

pub fn run(args: FrozenAArgs) -> anyhow::Result<()> {
    let cfg = Config::preset(&args.preset)?;
    let spec = Spec::new(
        Spec::parse_ranks(&args.ranks)?,
        Target::parse_list(&args.targets)?,
    )?;
    let t = Talora::new(spec, args.run_seed, Shape::from(&cfg))?;
    println!("{}", t.a_digest());
    Ok(())
}
