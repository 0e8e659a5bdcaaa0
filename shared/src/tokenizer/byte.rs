//! The built-in byte-level tokenizer: ids 0–255 are UTF-8 bytes, then mask, BOS, EOS, pad.
//!
//! No files, no merges, nothing to download: it is what the `tiny` demo model and every test use.
//! Any string encodes, and decoding any id sequence yields a string (specials are skipped and
//! invalid UTF-8 — e.g. a multi-byte character cut by a mask — becomes U+FFFD).

use super::{MASK_GLYPH, SpecialTokens, Tokenizer};

/// UTF-8 bytes as tokens, with [`SpecialTokens::BYTE`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().filter_map(|&id| u8::try_from(id).ok()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn vocab_size(&self) -> usize {
        SpecialTokens::BYTE_VOCAB
    }

    fn specials(&self) -> SpecialTokens {
        SpecialTokens::BYTE
    }

    fn token_str(&self, id: u32) -> String {
        let s = SpecialTokens::BYTE;
        match id {
            _ if id == s.mask => MASK_GLYPH.to_string(),
            _ if id == s.bos => "[BOS]".to_string(),
            _ if id == s.eos => "[EOS]".to_string(),
            _ if id == s.pad => "[PAD]".to_string(),
            0x0a => "\\n".to_string(),
            0x20..=0x7e => char::from(id as u8).to_string(),
            0..=0xff => format!("\\x{id:02x}"),
            _ => format!("[{id}?]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn specials_are_skipped_and_shown() {
        let t = ByteTokenizer;
        let s = SpecialTokens::BYTE;
        let mut ids = vec![s.bos];
        ids.extend(t.encode("héllo"));
        ids.extend([s.mask, s.eos, s.pad, 999]);
        assert_eq!(t.decode(&ids), "héllo");
        let shown: Vec<String> = [s.mask, s.bos, s.eos, s.pad, 65, 10, 0xc3, 999]
            .iter()
            .map(|&id| t.token_str(id))
            .collect();
        assert_eq!(
            shown,
            [
                "░", "[BOS]", "[EOS]", "[PAD]", "A", "\\n", "\\xc3", "[999?]"
            ]
        );
    }

    #[test]
    fn broken_utf8_decodes_lossily() {
        let t = ByteTokenizer;
        let mut ids = t.encode("é");
        ids.truncate(1);
        assert_eq!(t.decode(&ids), "\u{fffd}");
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(text in ".{0,40}") {
            let t = ByteTokenizer;
            let ids = t.encode(&text);
            prop_assert!(ids.iter().all(|&id| (id as usize) < t.vocab_size()));
            prop_assert_eq!(t.decode(&ids), text);
        }
    }
}
