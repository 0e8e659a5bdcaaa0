//! `calendar`: day arithmetic over calendars, `March 27 + 9 days is` → ` April 5.`
//!
//! A calendar is a cycle of named months with fixed lengths; the answer is computed by walking
//! forward (at most one month boundary, since shifts never exceed the shortest month). The
//! pretraining world holds the Gregorian common year and one invented calendar; the fine-tuning
//! world holds a new invented calendar whose month names, order and lengths are facts the base has
//! never seen. Shards split the problems by starting month, so a node learns only half of the
//! month facts locally; the held-out problems are a reserved slice nobody trains on.

use super::names::NameDeck;
use super::stream::Stream;
use super::table::{Table, Tier};

/// Largest day shift asked; every month in every calendar is longer than this.
pub(crate) const MAX_SHIFT: u32 = 20;
/// Months in an invented calendar.
const INVENTED_MONTHS: usize = 8;
/// Invented month lengths are drawn from this half-open range.
const INVENTED_LENGTHS: (u32, u32) = (24, 34);

const GREGORIAN: [(&str, u32); 12] = [
    ("January", 31),
    ("February", 28),
    ("March", 31),
    ("April", 30),
    ("May", 31),
    ("June", 30),
    ("July", 31),
    ("August", 31),
    ("September", 30),
    ("October", 31),
    ("November", 30),
    ("December", 31),
];

/// A cycle of `(month name, length in days)`.
#[derive(Debug, Clone)]
pub(crate) struct Calendar {
    pub(crate) months: Vec<(String, u32)>,
}

impl Calendar {
    fn gregorian() -> Self {
        Self {
            months: GREGORIAN.iter().map(|&(n, d)| (n.to_string(), d)).collect(),
        }
    }

    fn invented(rng: &mut Stream, names: &mut NameDeck) -> Self {
        let months = (0..INVENTED_MONTHS)
            .map(|_| {
                let name = names.draw_proper(rng);
                (name, rng.range(INVENTED_LENGTHS.0, INVENTED_LENGTHS.1))
            })
            .collect();
        Self { months }
    }

    /// The date `shift` days after day `day` (1-based) of month `month`: `(month, day)`.
    pub(crate) fn shift(&self, month: usize, day: u32, shift: u32) -> (usize, u32) {
        let mut month = month % self.months.len();
        let mut day = day + shift;
        while day > self.months[month].1 {
            day -= self.months[month].1;
            month = (month + 1) % self.months.len();
        }
        (month, day)
    }
}

/// One problem: calendar, starting month, starting day, shift.
struct Problem {
    calendar: usize,
    month: usize,
    day: u32,
    shift: u32,
}

struct CalendarTable {
    calendars: Vec<Calendar>,
    problems: Vec<Problem>,
}

pub(crate) fn build(tier: Tier, rng: &mut Stream, names: &mut NameDeck) -> Box<dyn Table> {
    let calendars = match tier {
        Tier::Pretrain => vec![Calendar::gregorian(), Calendar::invented(rng, names)],
        Tier::Finetune => vec![Calendar::invented(rng, names)],
    };
    let mut problems = Vec::new();
    for (c, calendar) in calendars.iter().enumerate() {
        for (month, &(_, len)) in calendar.months.iter().enumerate() {
            for day in 1..=len {
                for shift in 1..=MAX_SHIFT {
                    problems.push(Problem {
                        calendar: c,
                        month,
                        day,
                        shift,
                    });
                }
            }
        }
    }
    Box::new(CalendarTable {
        calendars,
        problems,
    })
}

impl Table for CalendarTable {
    fn len(&self) -> usize {
        self.problems.len()
    }

    fn group(&self, unit: usize) -> usize {
        let p = &self.problems[unit % self.problems.len()];
        p.calendar * 64 + p.month
    }

    fn render(&self, unit: usize, _rng: &mut Stream) -> (String, String) {
        let p = &self.problems[unit % self.problems.len()];
        let calendar = &self.calendars[p.calendar];
        let (month, day) = calendar.shift(p.month, p.day, p.shift);
        (
            format!(
                "{} {} + {} {} is",
                calendar.months[p.month].0,
                p.day,
                p.shift,
                if p.shift == 1 { "day" } else { "days" }
            ),
            format!(" {} {}.", calendar.months[month].0, day),
        )
    }

    fn entities(&self) -> Vec<String> {
        self.calendars
            .iter()
            .flat_map(|c| c.months.iter().map(|(n, _)| n.clone()))
            .filter(|n| !GREGORIAN.iter().any(|(g, _)| g == n))
            .collect()
    }
}

/// Whether `text` has this domain's shape.
pub(crate) fn matches(text: &str) -> bool {
    text.contains(" days is ") || text.contains(" day is ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gregorian_shifts_match_day_of_year_arithmetic() {
        let cal = Calendar::gregorian();
        let start_of: Vec<u32> = GREGORIAN
            .iter()
            .scan(0, |acc, &(_, d)| {
                let s = *acc;
                *acc += d;
                Some(s)
            })
            .collect();
        for month in 0..12 {
            for day in 1..=GREGORIAN[month].1 {
                for shift in 1..=MAX_SHIFT {
                    let (m, d) = cal.shift(month, day, shift);
                    let doy = (start_of[month] + day - 1 + shift) % 365;
                    assert_eq!(start_of[m] + d - 1, doy, "{month} {day} +{shift}");
                }
            }
        }
        assert_eq!(cal.shift(11, 31, 1), (0, 1));
        assert_eq!(cal.shift(1, 27, 3), (2, 2));
    }

    #[test]
    fn renders_computed_answers() {
        let table = build(
            Tier::Pretrain,
            &mut Stream::new(0, "t"),
            &mut NameDeck::new(),
        );
        let mut rng = Stream::new(0, "r");
        let first = table.render(0, &mut rng);
        assert_eq!(first, ("January 1 + 1 day is".into(), " January 2.".into()));
        assert!(matches(&format!("{}{}", first.0, first.1)));
        assert_eq!(table.entities().len(), INVENTED_MONTHS);
    }
}
