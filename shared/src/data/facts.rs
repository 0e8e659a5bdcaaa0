//! `facts`: key–value facts over an invented world, `The capital of Varonia is` → ` Teskel.`
//!
//! Each country has a capital and a currency, all invented names drawn from the shared deck. The
//! pretraining world holds a few hundred facts (it teaches the templates and the skill of recall);
//! the fine-tuning world holds a few dozen facts about countries the base has never seen, small
//! enough for a LoRA adapter to memorise in a few hundred steps. Answers are pure recall, so the
//! held-out queries are these same facts, asked of nodes that did not see them locally.

use super::names::NameDeck;
use super::stream::Stream;
use super::table::{Table, Tier};

/// Countries per world; every country contributes one fact per [`Relation`].
pub(crate) fn countries(tier: Tier) -> usize {
    match tier {
        Tier::Pretrain => 150,
        Tier::Finetune => 24,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Capital,
    Currency,
}

const RELATIONS: [Relation; 2] = [Relation::Capital, Relation::Currency];

struct Country {
    name: String,
    capital: String,
    currency: String,
}

struct Facts {
    countries: Vec<Country>,
}

pub(crate) fn build(tier: Tier, rng: &mut Stream, names: &mut NameDeck) -> Box<dyn Table> {
    let countries = (0..countries(tier))
        .map(|_| Country {
            name: names.draw_proper(rng),
            capital: names.draw_proper(rng),
            currency: names.draw(rng),
        })
        .collect();
    Box::new(Facts { countries })
}

impl Table for Facts {
    fn len(&self) -> usize {
        self.countries.len() * RELATIONS.len()
    }

    fn group(&self, unit: usize) -> usize {
        unit
    }

    fn render(&self, unit: usize, _rng: &mut Stream) -> (String, String) {
        let country = &self.countries[(unit / RELATIONS.len()) % self.countries.len()];
        match RELATIONS[unit % RELATIONS.len()] {
            Relation::Capital => (
                format!("The capital of {} is", country.name),
                format!(" {}.", country.capital),
            ),
            Relation::Currency => (
                format!("The currency of {} is the", country.name),
                format!(" {}.", country.currency),
            ),
        }
    }

    fn entities(&self) -> Vec<String> {
        self.countries
            .iter()
            .flat_map(|c| [c.name.clone(), c.capital.clone(), c.currency.clone()])
            .collect()
    }
}

/// Whether `text` has this domain's shape.
pub(crate) fn matches(text: &str) -> bool {
    (text.starts_with("The capital of ") || text.starts_with("The currency of "))
        && text.contains(" is")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_fact_is_distinct_and_recognised() {
        let table = build(
            Tier::Finetune,
            &mut Stream::new(0, "t"),
            &mut NameDeck::new(),
        );
        assert_eq!(table.len(), 48);
        let mut rng = Stream::new(0, "r");
        let prompts: HashSet<String> = (0..table.len())
            .map(|u| {
                let (p, a) = table.render(u, &mut rng);
                assert!(matches(&format!("{p}{a}")));
                assert!(a.starts_with(' ') && a.ends_with('.'));
                p
            })
            .collect();
        assert_eq!(prompts.len(), 48);
        assert!(!matches("a=3;b=a+4;b=7"));
    }
}
