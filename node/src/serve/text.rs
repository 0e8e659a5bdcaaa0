//! From a denoising canvas to the text an OpenAI client sees, one step at a time.
//!
//! A diffusion model commits tokens anywhere in its block, but an OpenAI client concatenates
//! `choices[].text` deltas and expects the result to be the completion. So a choice's text is
//! the decode of the *contiguous committed prefix* of its generation region — everything before
//! the first still-masked position, cut at the first EOS/EoT — and a step's delta is whatever
//! that prefix added. Committed tokens never change, so the prefix only grows; two things could
//! still make a naive delta wrong, and both are held back until they resolve:
//!
//! * a multi-byte character cut by the prefix end decodes to U+FFFD that the next token repairs;
//! * the prefix may end with the start of a stop sequence, which must never reach the client.
//!
//! Streaming and non-streaming responses both run this tracker on every step, so the text of a
//! non-streamed completion is by construction the concatenation of the streamed deltas.

use ruvdllm::tokenizer::Tokenizer;
use ruvdllm::tokens::SpecialTokens;
use serde::Serialize;

/// Why a choice ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An EOS/EoT token or a stop sequence.
    Stop,
    /// `max_tokens` ran out first (or the generation was cut short).
    Length,
}

/// One choice's text as the canvas denoises.
#[derive(Debug, Clone)]
pub struct TextTracker {
    specials: SpecialTokens,
    stop: Vec<String>,
    /// Echoed prompt, emitted in front of the first delta.
    echo: Option<String>,
    /// Everything emitted so far (echo included).
    text: String,
    /// Length of `text` that is the echo.
    echo_len: usize,
    /// Committed-prefix length (in tokens, EOS excluded) at the last decode.
    seen: usize,
    finish: Option<FinishReason>,
}

impl TextTracker {
    pub fn new(specials: SpecialTokens, stop: Vec<String>, echo: Option<String>) -> Self {
        TextTracker {
            specials,
            stop,
            echo,
            text: String::new(),
            echo_len: 0,
            seen: 0,
            finish: None,
        }
    }

    /// Feeds the row's generation region after a step and returns the text that became final.
    /// Once the choice has finished, returns nothing.
    pub fn update(&mut self, generated: &[u32], tokenizer: &dyn Tokenizer) -> String {
        if self.finish.is_some() {
            return String::new();
        }
        let s = self.specials;
        let committed = generated
            .iter()
            .position(|&t| t == s.mask)
            .unwrap_or(generated.len());
        let prefix = &generated[..committed];
        let end = s.answer_end(prefix);
        let (ids, mut finish) = if end < prefix.len() {
            (&prefix[..end], Some(FinishReason::Stop))
        } else if committed == generated.len() {
            (prefix, Some(FinishReason::Length))
        } else {
            (prefix, None)
        };
        let mut delta = String::new();
        if let Some(echo) = self.echo.take() {
            self.text.push_str(&echo);
            self.echo_len = echo.len();
            delta = echo;
        }
        if ids.len() == self.seen && finish.is_none() {
            return delta;
        }
        self.seen = ids.len();
        let mut text = tokenizer.decode(ids);
        if let Some(at) = earliest_stop(&text, &self.stop) {
            text.truncate(at);
            finish = Some(FinishReason::Stop);
        } else if finish.is_none() {
            let repaired_later = text.trim_end_matches('\u{FFFD}').len();
            text.truncate(repaired_later);
            let hold = stop_prefix_suffix(&text, &self.stop);
            text.truncate(text.len() - hold);
        }
        let generated_so_far = &self.text[self.echo_len..];
        match text.strip_prefix(generated_so_far) {
            Some(new) => {
                delta.push_str(new);
                self.text.push_str(new);
            }
            None => tracing::warn!(
                "the tokenizer's decode of a longer prefix changed earlier text; \
                 the streamed text keeps what was already sent"
            ),
        }
        self.finish = finish;
        delta
    }

    /// Ends a choice whose generation stopped before the canvas filled.
    pub fn cut_short(&mut self) {
        self.finish.get_or_insert(FinishReason::Length);
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Everything emitted so far (the echoed prompt included).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Generated tokens behind the text (the committed prefix at the last decode).
    pub fn tokens(&self) -> usize {
        self.seen
    }
}

/// Byte offset of the earliest occurrence of any stop sequence.
fn earliest_stop(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// Length of the longest suffix of `text` that is a proper prefix of some stop sequence.
fn stop_prefix_suffix(text: &str, stop: &[String]) -> usize {
    stop.iter()
        .filter_map(|s| {
            (1..s.len())
                .rev()
                .find(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k]))
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use ruvdllm::tokenizer::ByteTokenizer;

    const S: SpecialTokens = SpecialTokens::BYTE;

    /// Reveals `target` position by position in a seeded random order, collecting the deltas.
    fn reveal(
        target: &[u32],
        stop: &[&str],
        echo: Option<&str>,
        seed: u64,
    ) -> (String, TextTracker) {
        let mut t = TextTracker::new(
            S,
            stop.iter().map(|s| s.to_string()).collect(),
            echo.map(str::to_string),
        );
        let mut order: Vec<usize> = (0..target.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let mut canvas = vec![S.mask; target.len()];
        let mut out = String::new();
        for i in order {
            canvas[i] = target[i];
            out.push_str(&t.update(&canvas, &ByteTokenizer));
        }
        (out, t)
    }

    fn ids(text: &str) -> Vec<u32> {
        ByteTokenizer.encode(text)
    }

    #[test]
    fn deltas_concatenate_to_the_prefix_up_to_eos() {
        let mut target = ids("héllo wörld");
        target.extend([S.eos, S.eos, S.eos]);
        for seed in 0..20 {
            let (out, t) = reveal(&target, &[], None, seed);
            assert_eq!(out, "héllo wörld");
            assert_eq!(t.text(), out);
            assert_eq!(t.finish_reason(), Some(FinishReason::Stop));
            assert_eq!(t.tokens(), ids("héllo wörld").len());
        }
    }

    #[test]
    fn a_full_canvas_without_eos_is_length() {
        let (out, t) = reveal(&ids("abc"), &[], None, 1);
        assert_eq!(out, "abc");
        assert_eq!(t.finish_reason(), Some(FinishReason::Length));
    }

    #[test]
    fn only_the_contiguous_prefix_is_emitted() {
        let mut t = TextTracker::new(S, vec![], None);
        let m = S.mask;
        assert_eq!(t.update(&[m, 98, 99], &ByteTokenizer), "");
        assert_eq!(t.update(&[97, 98, m], &ByteTokenizer), "ab");
        assert_eq!(t.finish_reason(), None);
        assert_eq!(t.update(&[97, 98, 99], &ByteTokenizer), "c");
        assert_eq!(t.update(&[97, 98, 99], &ByteTokenizer), "");
    }

    #[test]
    fn a_cut_character_waits_for_its_last_byte() {
        let e = ids("é");
        let mut t = TextTracker::new(S, vec![], None);
        assert_eq!(t.update(&[e[0], S.mask], &ByteTokenizer), "");
        assert_eq!(t.update(&[e[0], e[1]], &ByteTokenizer), "é");
    }

    #[test]
    fn stop_sequences_never_leak_even_across_steps() {
        let target = ids("one. two. three");
        for seed in 0..20 {
            let (out, t) = reveal(&target, &[". t"], None, seed);
            assert_eq!(out, "one", "seed {seed}");
            assert_eq!(t.finish_reason(), Some(FinishReason::Stop));
        }
        // Overlapping prefixes: "aab" must be found at its earliest start.
        for seed in 0..20 {
            let (out, _) = reveal(&ids("xaaab"), &["aab"], None, seed);
            assert_eq!(out, "xa", "seed {seed}");
        }
        // The earliest of several stop sequences wins.
        let (out, _) = reveal(&ids("a;b,c"), &[",", ";"], None, 3);
        assert_eq!(out, "a");
        // A held-back partial stop is released when the text goes elsewhere.
        let (out, t) = reveal(&ids("xa."), &["ab"], None, 4);
        assert_eq!(out, "xa.");
        assert_eq!(t.finish_reason(), Some(FinishReason::Length));
    }

    #[test]
    fn echo_comes_first_and_is_not_searched_for_stops() {
        let (out, t) = reveal(&ids("done"), &["go"], Some("go: "), 2);
        assert_eq!(out, "go: done");
        assert_eq!(t.text(), "go: done");
    }

    #[test]
    fn cut_short_ends_with_length() {
        let mut t = TextTracker::new(S, vec![], None);
        assert_eq!(t.update(&[97, S.mask], &ByteTokenizer), "a");
        t.cut_short();
        assert_eq!(t.finish_reason(), Some(FinishReason::Length));
        assert_eq!(t.update(&[97, 98], &ByteTokenizer), "");
    }
}
