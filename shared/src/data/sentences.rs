//! `sentences`: templated English with a plural to produce, `I saw one fox and three` → ` foxes.`
//!
//! The relation between prompt and answer is deterministic: the answer is the plural of the noun in
//! the prompt. Real English nouns (regular and irregular) appear only in pretraining; invented nouns
//! carry an invented plural class (`-s`, `-es`, `-en` or unchanged) that is a fact about the noun,
//! so a fine-tuning table of new nouns is knowledge the base cannot infer. Shards split by noun.

use super::names::NameDeck;
use super::stream::Stream;
use super::table::{Table, Tier};

/// Invented nouns per world (pretraining also has every noun of [`ENGLISH`]).
pub(crate) fn invented_nouns(tier: Tier) -> usize {
    match tier {
        Tier::Pretrain => 120,
        Tier::Finetune => 16,
    }
}

/// Number words that follow "and" in the template.
const COUNTS: [&str; 3] = ["two", "three", "five"];

/// Plural endings an invented noun may take.
const INVENTED_SUFFIXES: [&str; 4] = ["s", "es", "en", ""];

/// Real nouns with their plurals (irregular ones included on purpose).
const ENGLISH: [(&str, &str); 40] = [
    ("cat", "cats"),
    ("dog", "dogs"),
    ("tree", "trees"),
    ("house", "houses"),
    ("book", "books"),
    ("river", "rivers"),
    ("apple", "apples"),
    ("bird", "birds"),
    ("stone", "stones"),
    ("lamp", "lamps"),
    ("ship", "ships"),
    ("horse", "horses"),
    ("fox", "foxes"),
    ("box", "boxes"),
    ("bus", "buses"),
    ("church", "churches"),
    ("dish", "dishes"),
    ("glass", "glasses"),
    ("brush", "brushes"),
    ("witch", "witches"),
    ("city", "cities"),
    ("berry", "berries"),
    ("lady", "ladies"),
    ("pony", "ponies"),
    ("fly", "flies"),
    ("leaf", "leaves"),
    ("wolf", "wolves"),
    ("knife", "knives"),
    ("mouse", "mice"),
    ("goose", "geese"),
    ("tooth", "teeth"),
    ("foot", "feet"),
    ("child", "children"),
    ("man", "men"),
    ("woman", "women"),
    ("ox", "oxen"),
    ("sheep", "sheep"),
    ("deer", "deer"),
    ("fish", "fish"),
    ("cactus", "cacti"),
];

struct Noun {
    singular: String,
    plural: String,
    invented: bool,
}

struct Sentences {
    nouns: Vec<Noun>,
}

pub(crate) fn build(tier: Tier, rng: &mut Stream, names: &mut NameDeck) -> Box<dyn Table> {
    let mut nouns: Vec<Noun> = match tier {
        Tier::Pretrain => ENGLISH
            .iter()
            .map(|&(s, p)| Noun {
                singular: s.into(),
                plural: p.into(),
                invented: false,
            })
            .collect(),
        Tier::Finetune => Vec::new(),
    };
    for _ in 0..invented_nouns(tier) {
        let singular = names.draw(rng);
        let mut suffix = rng.pick(&INVENTED_SUFFIXES).copied().unwrap_or("s");
        if suffix == "s" && singular.ends_with('s') {
            // As in English: a sibilant ending takes "-es" ("bus" → "buses").
            suffix = "es";
        }
        nouns.push(Noun {
            plural: format!("{singular}{suffix}"),
            singular,
            invented: true,
        });
    }
    Box::new(Sentences { nouns })
}

impl Table for Sentences {
    fn len(&self) -> usize {
        self.nouns.len() * COUNTS.len()
    }

    fn group(&self, unit: usize) -> usize {
        unit / COUNTS.len()
    }

    fn render(&self, unit: usize, _rng: &mut Stream) -> (String, String) {
        let noun = &self.nouns[(unit / COUNTS.len()) % self.nouns.len()];
        let count = COUNTS[unit % COUNTS.len()];
        (
            format!("I saw one {} and {count}", noun.singular),
            format!(" {}.", noun.plural),
        )
    }

    fn entities(&self) -> Vec<String> {
        self.nouns
            .iter()
            .filter(|n| n.invented)
            .map(|n| n.singular.clone())
            .collect()
    }
}

/// Whether `text` has this domain's shape.
pub(crate) fn matches(text: &str) -> bool {
    text.starts_with("I saw one ") && text.contains(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plural_follows_the_noun() {
        let table = build(
            Tier::Pretrain,
            &mut Stream::new(0, "t"),
            &mut NameDeck::new(),
        );
        assert_eq!(table.len(), (ENGLISH.len() + 120) * COUNTS.len());
        let mut rng = Stream::new(0, "r");
        let mouse = ENGLISH.iter().position(|&(s, _)| s == "mouse").unwrap();
        let (p, a) = table.render(mouse * COUNTS.len() + 1, &mut rng);
        assert_eq!(
            (p.as_str(), a.as_str()),
            ("I saw one mouse and three", " mice.")
        );
        for unit in 0..table.len() {
            let (p, a) = table.render(unit, &mut rng);
            assert!(matches(&format!("{p}{a}")));
            let singular = p
                .trim_start_matches("I saw one ")
                .split(' ')
                .next()
                .unwrap();
            assert_eq!(table.group(unit), unit / COUNTS.len());
            assert!(a.len() > 2, "{singular}");
        }
        assert_eq!(table.entities().len(), 120);
    }
}
