//! HF tokenizer tests on a tiny word-level `tokenizer.json` built with the `tokenizers` API.

use std::path::Path;

use tokenizers::AddedToken;
use tokenizers::models::bpe::Vocab;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;

use super::*;

const WORDS: [&str; 8] = [
    "[UNK]", "the", "capital", "of", "varonia", "is", "teskel", ".",
];
const SPECIALS: [&str; 4] = ["<s>", "</s>", "<pad>", "<|mdm_mask|>"];

/// Writes `dir/tokenizer.json`: ids 0..8 are [`WORDS`], then the specials (mask optional).
fn write_tokenizer(dir: &Path, with_mask: bool) {
    let specials = if with_mask {
        &SPECIALS[..]
    } else {
        &SPECIALS[..3]
    };
    let vocab: Vocab = WORDS
        .iter()
        .chain(specials)
        .enumerate()
        .map(|(i, w)| (w.to_string(), i as u32))
        .collect();
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    tok.add_special_tokens(specials.iter().map(|s| AddedToken::from(*s, true)))
        .unwrap();
    tok.save(dir.join("tokenizer.json"), false).unwrap();
}

fn write(dir: &Path, name: &str, json: &str) {
    std::fs::write(dir.join(name), json).unwrap();
}

#[test]
fn resolves_specials_from_tokenizer_config_and_token_names() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), true);
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"bos_token": "<s>", "eos_token": {"content": "</s>", "special": true}}"#,
    );
    let tok = HfTokenizer::from_dir(dir.path()).unwrap();
    let s = tok.specials();
    // mask by its well-known name, pad by "<pad>", no end-of-turn token in this vocabulary.
    assert_eq!((s.bos, s.eos, s.pad, s.mask, s.eot), (8, 9, 10, 11, None));
    assert_eq!(tok.vocab_size(), 12);

    assert_eq!(tok.encode("the capital of varonia is"), vec![1, 2, 3, 4, 5]);
    assert_eq!(tok.encode("the dragon"), vec![1, 0]);
    assert_eq!(tok.decode(&[8, 1, 2, 11, 6, 9, 10]), "the capital teskel");
    assert_eq!(tok.token_str(11), MASK_GLYPH);
    assert_eq!(tok.token_str(8), "[BOS]");
    assert_eq!(tok.token_str(6), "teskel");
    assert_eq!(tok.token_str(500), "[500?]");
}

#[test]
fn config_ids_take_precedence_in_order() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), true);
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"bos_token": "<s>", "eos_token": "</s>"}"#,
    );
    write(
        dir.path(),
        "config.json",
        r#"{"mask_token_id": 7, "eos_token_id": [6, 9], "bos_token_id": 5, "vocab_size": 64}"#,
    );
    write(
        dir.path(),
        "generation_config.json",
        r#"{"bos_token_id": 4}"#,
    );
    let tok = HfTokenizer::from_dir(dir.path()).unwrap();
    let s = tok.specials();
    assert_eq!((s.mask, s.bos, s.eos), (7, 4, 6));
    assert_eq!(
        tok.vocab_size(),
        64,
        "the model's embedding size wins when larger"
    );

    let explicit = SpecialOverrides {
        mask: Some(3),
        eot: Some(2),
        ..SpecialOverrides::default()
    };
    let tok = HfTokenizer::from_dir_with(dir.path(), explicit).unwrap();
    assert_eq!((tok.specials().mask, tok.specials().eot), (3, Some(2)));
}

#[test]
fn unresolvable_specials_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), false);
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"bos_token": "<s>", "eos_token": "</s>"}"#,
    );
    match HfTokenizer::from_dir(dir.path()) {
        Err(Error::MissingSpecial {
            name: "mask",
            dir: d,
        }) => assert_eq!(d, dir.path()),
        other => panic!("expected MissingSpecial, got {other:?}"),
    }
    let mask_100 = SpecialOverrides {
        mask: Some(100),
        ..SpecialOverrides::default()
    };
    let tok = HfTokenizer::from_dir_with(dir.path(), mask_100).unwrap();
    assert_eq!(
        tok.vocab_size(),
        101,
        "an out-of-vocabulary mask id extends the vocabulary"
    );

    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"bos_token": "<start>"}"#,
    );
    assert!(matches!(
        HfTokenizer::from_dir_with(dir.path(), mask_100),
        Err(Error::UnknownToken { name: "bos", .. })
    ));
    write(dir.path(), "config.json", "{not json");
    assert!(matches!(
        HfTokenizer::from_dir(dir.path()),
        Err(Error::ParseConfig { .. })
    ));
}

#[test]
fn broken_tokenizer_json_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tokenizer.json", r#"{"model": 3}"#);
    match HfTokenizer::from_dir(dir.path()) {
        Err(Error::Load { path, .. }) => assert_eq!(path, dir.path().join("tokenizer.json")),
        other => panic!("expected a load error, got {other:?}"),
    }
    match crate::tokenizer::load(Some(dir.path())) {
        Err(Error::Load { .. }) => {}
        Err(other) => panic!("expected a load error, got {other:?}"),
        Ok(_) => panic!("a broken tokenizer.json must not load"),
    }
}

#[test]
fn load_picks_hf_when_the_folder_has_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), true);
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"bos_token": "<s>", "eos_token": "</s>"}"#,
    );
    let tok = crate::tokenizer::load(Some(dir.path())).unwrap();
    assert_eq!(tok.vocab_size(), 12);
    let packed =
        crate::tokenizer::encode_sample(&*tok, "the capital of varonia is", " teskel.", 10)
            .unwrap();
    assert_eq!(packed.ids, vec![8, 1, 2, 3, 4, 5, 6, 7, 9, 9]);
    assert_eq!(packed.prompt_len, 6);

    let from_file =
        HfTokenizer::from_file(&dir.path().join("tokenizer.json"), SpecialTokens::BYTE).unwrap();
    assert_eq!(from_file.specials(), SpecialTokens::BYTE);
}
