//! `code`: straight-line assignments to trace, `a=3;b=a+4;b=` → `7`.
//!
//! Four templates exercise data flow rather than arithmetic alone: an increment, a decrement, a
//! sum of two variables, and value semantics after an overwrite (`x=5;y=x;x=9;y=` → `5`). Variable
//! letters are drawn per sample (surface form only); the numbers make up the problem. The
//! pretraining world uses constants 0..50, the fine-tuning world 50..100.

use super::names::NameDeck;
use super::stream::Stream;
use super::table::{Table, Tier};

/// Constant range (half-open) per world.
pub(crate) fn value_range(tier: Tier) -> (u32, u32) {
    match tier {
        Tier::Pretrain => (0, 50),
        Tier::Finetune => (50, 100),
    }
}

/// Step sizes for increments and decrements.
const STEPS: (u32, u32) = (1, 21);

#[derive(Debug, Clone, Copy)]
enum Problem {
    /// `x=A;y=x+K;y=`
    Inc { a: u32, k: u32 },
    /// `x=A;y=x-K;y=`
    Dec { a: u32, k: u32 },
    /// `x=A;y=B;z=x+y;z=`
    Sum { a: u32, b: u32 },
    /// `x=A;y=x;x=B;y=` (the answer is A)
    Keep { a: u32, b: u32 },
}

struct Code {
    problems: Vec<Problem>,
}

pub(crate) fn build(tier: Tier, _rng: &mut Stream, _names: &mut NameDeck) -> Box<dyn Table> {
    let (lo, hi) = value_range(tier);
    let mut problems = Vec::new();
    for a in lo..hi {
        for k in STEPS.0..STEPS.1 {
            problems.push(Problem::Inc { a, k });
            if a >= k {
                problems.push(Problem::Dec { a, k });
            }
        }
        for b in lo..hi {
            problems.push(Problem::Sum { a, b });
            if a != b {
                problems.push(Problem::Keep { a, b });
            }
        }
    }
    Box::new(Code { problems })
}

/// Three distinct variable letters.
fn letters(rng: &mut Stream) -> [char; 3] {
    let mut pool: Vec<char> = ('a'..='z').collect();
    let mut out = ['x'; 3];
    for slot in &mut out {
        *slot = pool.swap_remove(rng.index(pool.len()));
    }
    out
}

impl Table for Code {
    fn len(&self) -> usize {
        self.problems.len()
    }

    fn group(&self, unit: usize) -> usize {
        unit
    }

    fn render(&self, unit: usize, rng: &mut Stream) -> (String, String) {
        let [x, y, z] = letters(rng);
        match self.problems[unit % self.problems.len()] {
            Problem::Inc { a, k } => (format!("{x}={a};{y}={x}+{k};{y}="), (a + k).to_string()),
            Problem::Dec { a, k } => (format!("{x}={a};{y}={x}-{k};{y}="), (a - k).to_string()),
            Problem::Sum { a, b } => (
                format!("{x}={a};{y}={b};{z}={x}+{y};{z}="),
                (a + b).to_string(),
            ),
            Problem::Keep { a, b } => (format!("{x}={a};{y}={x};{x}={b};{y}="), a.to_string()),
        }
    }

    fn entities(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Runs a program of this domain: `;`-separated assignments `v=expr` where `expr` is a number, a
/// variable, or `operand(+|-)operand`, ending with `v=` (the query). `None` if malformed.
pub(crate) fn evaluate(prompt: &str) -> Option<i64> {
    let body = prompt.strip_suffix('=')?;
    let (statements, query) = body.rsplit_once(';')?;
    let mut vars: Vec<(&str, i64)> = Vec::new();
    let lookup = |vars: &[(&str, i64)], token: &str| -> Option<i64> {
        if token.bytes().all(|c| c.is_ascii_digit()) && !token.is_empty() {
            token.parse().ok()
        } else {
            vars.iter()
                .rev()
                .find(|(n, _)| *n == token)
                .map(|&(_, v)| v)
        }
    };
    for statement in statements.split(';') {
        let (name, expr) = statement.split_once('=')?;
        if name.len() != 1 || !name.bytes().all(|c| c.is_ascii_lowercase()) {
            return None;
        }
        let value = match expr.find(['+', '-']) {
            Some(i) => {
                let (l, r) = (lookup(&vars, &expr[..i])?, lookup(&vars, &expr[i + 1..])?);
                if expr.as_bytes()[i] == b'+' {
                    l + r
                } else {
                    l - r
                }
            }
            None => lookup(&vars, expr)?,
        };
        vars.push((name, value));
    }
    lookup(&vars, query).filter(|_| !query.bytes().any(|c| c.is_ascii_digit()))
}

/// Whether `text` (prompt + answer) has this domain's shape: a runnable program, then digits.
pub(crate) fn matches(text: &str) -> bool {
    match text.rsplit_once('=') {
        Some((program, answer)) => {
            !answer.is_empty()
                && answer.bytes().all(|c| c.is_ascii_digit())
                && evaluate(&format!("{program}=")).is_some()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_evaluates_to_its_answer() {
        for tier in [Tier::Pretrain, Tier::Finetune] {
            let table = build(tier, &mut Stream::new(0, "t"), &mut NameDeck::new());
            let mut rng = Stream::new(0, "r");
            for unit in 0..table.len() {
                let (prompt, answer) = table.render(unit, &mut rng);
                assert_eq!(
                    evaluate(&prompt).map(|v| v.to_string()),
                    Some(answer.clone()),
                    "{prompt}"
                );
                assert!(matches(&format!("{prompt}{answer}")), "{prompt}");
            }
        }
    }

    #[test]
    fn evaluate_traces_data_flow() {
        assert_eq!(evaluate("a=3;b=a+4;b="), Some(7));
        assert_eq!(evaluate("x=5;y=x;x=9;y="), Some(5));
        assert_eq!(evaluate("x=5;y=x;x=9;x="), Some(9));
        assert_eq!(evaluate("x=5;y=q;y="), None);
        assert_eq!(evaluate("37+48="), None);
        assert!(!matches("37+48=85"));
    }
}
