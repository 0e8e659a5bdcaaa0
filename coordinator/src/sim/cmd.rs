//! The `coordinator simulate` command: progress bars on stderr (a rounds bar and a bar of the
//! nodes that finished the current round), the settings, the round table and the summary on
//! stdout. Bars disappear when stderr is not a terminal or with `--quiet`; the table is printed
//! either way.

use std::io::Write;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::config::SimArgs;
use super::run::{Observer, run};

struct Bars {
    multi: MultiProgress,
    rounds: ProgressBar,
    nodes: ProgressBar,
}

impl Bars {
    fn new(rounds: u64, nodes: usize, quiet: bool) -> Self {
        let multi = MultiProgress::with_draw_target(if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        });
        let style = ProgressStyle::with_template("{prefix:>7} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let rounds = multi.add(ProgressBar::new(rounds).with_style(style.clone()));
        rounds.set_prefix("rounds");
        let nodes = multi.add(ProgressBar::new(nodes as u64).with_style(style));
        nodes.set_prefix("nodes");
        Self {
            multi,
            rounds,
            nodes,
        }
    }
}

impl Observer for Bars {
    fn line(&self, text: &str) {
        self.multi.suspend(|| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        });
    }

    fn round_started(&self, round: u64) {
        self.nodes.reset();
        self.nodes
            .set_message(format!("round {round}: fetch, train, upload"));
    }

    fn nodes_done(&self, done: usize, _of: usize) {
        self.nodes.set_position(done as u64);
    }

    fn round_finished(&self, round: u64) {
        self.rounds.set_position(round);
        self.nodes.set_message("evaluating the new global adapter");
    }
}

/// Runs `coordinator simulate`.
pub fn command(args: SimArgs) -> anyhow::Result<()> {
    let cfg = args.validate()?;
    let bars = Bars::new(cfg.args.rounds, cfg.args.nodes, cfg.args.quiet);
    let result = run(cfg, &bars);
    bars.rounds.finish_and_clear();
    bars.nodes.finish_and_clear();
    result.map(|_| ())
}
