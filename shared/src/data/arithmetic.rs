//! `arithmetic`: two-operand addition and subtraction, `37+48=` → `85`.
//!
//! The pretraining world uses operands 0..50, the fine-tuning world 50..100 (so sums cross into
//! three digits the base has rarely produced). Subtraction keeps results non-negative. Every answer
//! is computed, so a held-out slice of fresh problems measures generalisation, not recall.

use super::names::NameDeck;
use super::stream::Stream;
use super::table::{Table, Tier};

/// Operand range (half-open) per world.
pub(crate) fn operand_range(tier: Tier) -> (u32, u32) {
    match tier {
        Tier::Pretrain => (0, 50),
        Tier::Finetune => (50, 100),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
}

struct Problem {
    a: u32,
    op: Op,
    b: u32,
}

struct Arithmetic {
    problems: Vec<Problem>,
}

pub(crate) fn build(tier: Tier, _rng: &mut Stream, _names: &mut NameDeck) -> Box<dyn Table> {
    let (lo, hi) = operand_range(tier);
    let mut problems = Vec::new();
    for a in lo..hi {
        for b in lo..hi {
            problems.push(Problem { a, op: Op::Add, b });
            if a >= b {
                problems.push(Problem { a, op: Op::Sub, b });
            }
        }
    }
    Box::new(Arithmetic { problems })
}

impl Table for Arithmetic {
    fn len(&self) -> usize {
        self.problems.len()
    }

    fn group(&self, unit: usize) -> usize {
        unit
    }

    fn render(&self, unit: usize, _rng: &mut Stream) -> (String, String) {
        let p = &self.problems[unit % self.problems.len()];
        let (sym, value) = match p.op {
            Op::Add => ('+', p.a + p.b),
            Op::Sub => ('-', p.a - p.b),
        };
        (format!("{}{sym}{}=", p.a, p.b), value.to_string())
    }

    fn entities(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Evaluates a prompt of this domain (`a+b=` or `a-b=`); `None` if it is not one.
pub(crate) fn evaluate(prompt: &str) -> Option<i64> {
    let body = prompt.strip_suffix('=')?;
    let split = body.find(['+', '-'])?;
    let (a, rest) = body.split_at(split);
    let b = &rest[1..];
    if a.is_empty() || b.is_empty() || !a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (a, b): (i64, i64) = (a.parse().ok()?, b.parse().ok()?);
    Some(if rest.starts_with('+') { a + b } else { a - b })
}

/// Whether `text` (prompt + answer) has this domain's shape: `digits op digits = digits`.
pub(crate) fn matches(text: &str) -> bool {
    match text.split_once('=') {
        Some((lhs, rhs)) => {
            evaluate(&format!("{lhs}=")).is_some()
                && !rhs.is_empty()
                && rhs.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_evaluates_to_its_answer() {
        for tier in [Tier::Pretrain, Tier::Finetune] {
            let table = build(tier, &mut Stream::new(0, "t"), &mut NameDeck::new());
            let mut rng = Stream::new(0, "r");
            let (lo, hi) = operand_range(tier);
            for unit in 0..table.len() {
                let (prompt, answer) = table.render(unit, &mut rng);
                let value = evaluate(&prompt).expect("well-formed");
                assert_eq!(value.to_string(), answer, "{prompt}");
                assert!(value >= 0);
                let operands: Vec<u32> = prompt
                    .trim_end_matches('=')
                    .split(['+', '-'])
                    .map(|s| s.parse().unwrap())
                    .collect();
                assert!(operands.iter().all(|v| (lo..hi).contains(v)), "{prompt}");
                assert!(matches(&format!("{prompt}{answer}")));
            }
        }
    }

    #[test]
    fn evaluate_rejects_other_shapes() {
        assert_eq!(evaluate("3+4="), Some(7));
        assert_eq!(evaluate("9-4="), Some(5));
        assert_eq!(evaluate("3+4"), None);
        assert_eq!(evaluate("+4="), None);
        assert_eq!(evaluate("a=3;b=a+4;b="), None);
        assert!(!matches("3+4="));
        assert!(!matches("The capital of X is Y."));
    }
}
