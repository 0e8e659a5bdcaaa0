//! Invented, pronounceable names (4–8 letters) drawn without replacement.
//!
//! A name is two syllables, each onset + vowel + optional coda ("tes" + "kel"). The deck holds
//! every such pair; tables draw from it with their own stream and remove what they take, so two
//! tables built from one deck can never share a name. Two-letter onsets start with a letter no coda
//! uses, so a name splits into syllables one way only and distinct pairs are distinct strings. That is how the fine-tuning world is made
//! disjoint from the pretraining world by construction rather than by hoping seeds differ.

use super::stream::Stream;

const ONSETS: [&str; 18] = [
    "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr",
];
const VOWELS: [&str; 7] = ["a", "e", "i", "o", "u", "ai", "ou"];
const CODAS: [&str; 6] = ["", "", "n", "r", "l", "s"];

/// All distinct syllables of 2..=4 letters, in a fixed order.
fn syllables() -> Vec<String> {
    let mut out = Vec::new();
    for onset in ONSETS {
        for vowel in VOWELS {
            for coda in CODAS {
                let syl = format!("{onset}{vowel}{coda}");
                if (2..=4).contains(&syl.len()) && !out.contains(&syl) {
                    out.push(syl);
                }
            }
        }
    }
    out
}

/// A deck of unused two-syllable names (lower case).
pub(crate) struct NameDeck {
    syllables: Vec<String>,
    /// Unused names, each encoded as `first * n_syllables + second`.
    unused: Vec<u32>,
    /// How many names were handed out after the deck ran dry (see [`NameDeck::draw`]).
    overflow: u32,
}

impl NameDeck {
    pub(crate) fn new() -> Self {
        let syllables = syllables();
        let n = syllables.len() as u32;
        Self {
            unused: (0..n * n).collect(),
            syllables,
            overflow: 0,
        }
    }

    /// Names still available.
    #[cfg(test)]
    pub(crate) fn remaining(&self) -> usize {
        self.unused.len()
    }

    /// Draws one unused name, lower case, 4–8 letters.
    ///
    /// The deck holds ~10⁵ names and the generator's tables need about a thousand, so it never runs
    /// dry in practice; if it ever did, names of three syllables (never in the deck, hence still
    /// unique) are handed out instead of failing.
    pub(crate) fn draw(&mut self, rng: &mut Stream) -> String {
        let n = self.syllables.len();
        if self.unused.is_empty() {
            let k = self.overflow as usize;
            self.overflow += 1;
            return format!(
                "{}{}{}",
                self.syllables[k / (n * n) % n],
                self.syllables[k / n % n],
                self.syllables[k % n]
            );
        }
        let code = self.unused.swap_remove(rng.index(self.unused.len())) as usize;
        format!("{}{}", self.syllables[code / n], self.syllables[code % n])
    }

    /// Draws a name with its first letter upper-cased (proper nouns).
    pub(crate) fn draw_proper(&mut self, rng: &mut Stream) -> String {
        capitalize(&self.draw(rng))
    }
}

/// `word` with its first character upper-cased.
pub(crate) fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_pronounceable_and_sized() {
        let mut deck = NameDeck::new();
        assert!(deck.remaining() > 50_000, "deck has {}", deck.remaining());
        let mut rng = Stream::new(3, "names");
        let mut seen = HashSet::new();
        for _ in 0..2000 {
            let name = deck.draw(&mut rng);
            assert!((4..=8).contains(&name.len()), "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase()), "{name}");
            assert!(name.bytes().any(|b| b"aeiou".contains(&b)), "{name}");
            assert!(seen.insert(name));
        }
    }

    #[test]
    fn an_exhausted_deck_still_yields_unique_names() {
        let mut deck = NameDeck::new();
        let mut rng = Stream::new(4, "drain");
        let mut seen = HashSet::new();
        let total = deck.remaining() + 50;
        for _ in 0..total {
            assert!(seen.insert(deck.draw(&mut rng)));
        }
    }

    #[test]
    fn capitalize_upper_cases_the_first_letter() {
        assert_eq!(capitalize("teskel"), "Teskel");
        assert_eq!(capitalize(""), "");
    }
}
