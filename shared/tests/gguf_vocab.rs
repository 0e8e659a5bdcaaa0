//! Tokenizers rebuilt from GGUF metadata against the `tokenizers` library's own.
//!
//! `fixtures/gen_gguf_vocab.py` trains a small byte-level BPE for each pre-tokenizer llama.cpp
//! names (`qwen2`, `llama-bpe`, `gpt2`) with the pre-tokenizer of the models' real
//! `tokenizer.json`, writes its vocabulary into a GGUF file as llama.cpp's converter does
//! (through gguf-py), and records the ids the reference gives a set of texts. Rebuilt from the
//! GGUF metadata alone, each must give the same ids.

#![cfg(feature = "model")]

use std::path::PathBuf;

use ruvdllm::candle_core::quantized::gguf_file::{Content, Value};
use ruvdllm::tokenizer::{SpecialTokens, Tokenizer, gguf_vocab};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_vocab")
}

fn metadata(pre: &str) -> std::collections::HashMap<String, Value> {
    let mut f = std::fs::File::open(fixtures().join(format!("{pre}.gguf"))).unwrap();
    Content::read(&mut f).unwrap().metadata
}

const SPECIALS: SpecialTokens = SpecialTokens {
    mask: 1,
    bos: 0,
    eos: 0,
    pad: 0,
    eot: None,
};

fn cases(pre: &str) -> Vec<(String, Vec<u32>)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join(format!("{pre}_ids.json"))).unwrap())
            .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

#[test]
fn rebuilt_vocabularies_encode_as_the_reference_tokenizers() {
    for pre in ["qwen2", "llama-bpe", "gpt2"] {
        let tok = gguf_vocab::from_metadata(&metadata(pre), SPECIALS)
            .unwrap()
            .expect("a vocabulary");
        for (text, want) in cases(pre) {
            assert_eq!(tok.try_encode(&text).unwrap(), want, "{pre}: {text:?}");
            if !text.contains("<|") {
                assert_eq!(tok.decode(&want), text, "{pre}: decode");
            }
        }
    }
}

#[test]
fn the_pre_tokenizer_matters_and_unknown_ones_are_refused() {
    // The gpt2 vocabulary (merges across what qwen2 splits, e.g. a space and digits) under
    // the qwen2 regex encodes some text differently: the regex is applied, and it matters.
    let mut meta = metadata("gpt2");
    meta.insert("tokenizer.ggml.pre".into(), Value::String("qwen2".into()));
    let wrong = gguf_vocab::from_metadata(&meta, SPECIALS).unwrap().unwrap();
    assert!(
        cases("gpt2")
            .iter()
            .any(|(t, ids)| &wrong.try_encode(t).unwrap() != ids)
    );
    for (key, value, says) in [
        (
            "tokenizer.ggml.pre",
            "deepseek-llm",
            "`deepseek-llm` pre-tokenizer",
        ),
        ("tokenizer.ggml.model", "llama", "`llama` vocabulary"),
    ] {
        let mut meta = metadata("qwen2");
        meta.insert(key.into(), Value::String(value.into()));
        let e = gguf_vocab::from_metadata(&meta, SPECIALS)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(says) && e.contains("tokenizer.json"), "{e}");
    }
    // No vocabulary at all: nothing to rebuild.
    let mut meta = metadata("qwen2");
    meta.remove("tokenizer.ggml.model");
    assert!(
        gguf_vocab::from_metadata(&meta, SPECIALS)
            .unwrap()
            .is_none()
    );
}

#[test]
fn rebuilt_vocabularies_agree_with_the_reference_json_on_many_texts() {
    // Beyond the recorded cases: strings mixing letters, digits, spaces, newlines, punctuation,
    // contractions and non-ASCII, encoded by the committed tokenizer.json and the rebuild.
    let pieces = [
        "The",
        " cap",
        "ital",
        " 12",
        "3",
        "45",
        "\n",
        "\r\n",
        "  ",
        "\t",
        "'s",
        "'LL",
        "'Re",
        " naïve",
        " 東京",
        "!!",
        "?",
        " —",
        "x=",
        "7;",
        "  \n ",
        "Ünï",
        "wörds",
        "…",
        "<|endoftext|>",
    ];
    for pre in ["qwen2", "llama-bpe", "gpt2"] {
        let rebuilt = gguf_vocab::from_metadata(&metadata(pre), SPECIALS)
            .unwrap()
            .unwrap();
        let reference = ruvdllm::tokenizer::HfTokenizer::from_file(
            &fixtures().join(pre).join("tokenizer.json"),
            SPECIALS,
        )
        .unwrap();
        let mut state = 7u64;
        for _ in 0..300 {
            let mut text = String::new();
            for _ in 0..6 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(pieces[(state >> 33) as usize % pieces.len()]);
            }
            assert_eq!(
                rebuilt.try_encode(&text).unwrap(),
                reference.try_encode(&text).unwrap(),
                "{pre}: {text:?}"
            );
        }
    }
}
