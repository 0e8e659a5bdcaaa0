//! Our chat-template renderer against Hugging Face transformers' (the reference implementation).
//!
//! `fixtures/gen_chat_templates.py` renders a few templates of our own (Llama-3/LLaDA headers,
//! ChatML, tools with HF's `tojson`/`raise_exception`/`namespace`/loop controls/`{% generation %}`,
//! trim_blocks/lstrip_blocks whitespace, list-of-parts content, slicing and tests, undefined
//! values) with `transformers.utils.chat_template_utils.render_jinja_template` and commits inputs
//! and outputs to `fixtures/chat_templates/cases.json`. Every case must render byte for byte the
//! same here, or fail with an error whose text contains the recorded substring.

#![cfg(feature = "model")]

use std::fmt::Write as _;
use std::path::PathBuf;

use ruvdllm::tokenizer::{ChatError, ChatTemplate};
use serde_json::{Map, Value};

fn fixture() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates/cases.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Where two renderings first differ: the char index, the byte offset, and both sides around it.
fn describe_difference(expected: &str, got: &str) -> String {
    let (index, byte) = expected
        .char_indices()
        .zip(got.chars())
        .enumerate()
        .find(|(_, ((_, e), g))| e != g)
        .map(|(i, ((b, _), _))| (i, b))
        .unwrap_or_else(|| {
            let n = expected.chars().count().min(got.chars().count());
            let b = expected
                .char_indices()
                .nth(n)
                .map_or(expected.len(), |(b, _)| b);
            (n, b)
        });
    let around = |s: &str| -> String {
        let chars: Vec<char> = s.chars().collect();
        let start = index.saturating_sub(30);
        let end = (index + 30).min(chars.len());
        let before: String = chars[start.min(chars.len())..index.min(chars.len())]
            .iter()
            .collect();
        let after: String = chars[index.min(chars.len())..end].iter().collect();
        format!("{}⟦{}", before.escape_debug(), after.escape_debug())
    };
    format!(
        "first difference at char {index} (byte {byte}; expected {} chars, got {})\n      \
         expected: …{}…\n      got:      …{}…",
        expected.chars().count(),
        got.chars().count(),
        around(expected),
        around(got),
    )
}

/// Builds and renders one case; `Err` carries a readable description of the mismatch.
fn run_case(templates: &Map<String, Value>, case: &Value) -> Result<(), String> {
    let template_name = case["template"].as_str().expect("case.template");
    let source = templates[template_name].as_str().expect("template source");
    let messages = case["messages"].as_array().expect("case.messages");
    let add_generation_prompt = case["add_generation_prompt"]
        .as_bool()
        .expect("case.add_generation_prompt");
    let mut variables = case["variables"].as_object().cloned().unwrap_or_default();
    let tools = variables
        .remove("tools")
        .map(|t| t.as_array().cloned().expect("variables.tools is a list"));

    let rendered = ChatTemplate::new(source, variables)
        .and_then(|template| template.render(messages, tools.as_deref(), add_generation_prompt));

    match (case.get("expected"), case.get("error"), rendered) {
        (Some(expected), _, Ok(got)) => {
            let expected = expected.as_str().expect("case.expected");
            if got == expected {
                Ok(())
            } else {
                Err(describe_difference(expected, &got))
            }
        }
        (Some(_), _, Err(e)) => Err(format!("expected a rendering, got the error: {e}")),
        (None, Some(substring), Err(e)) => {
            let substring = substring.as_str().expect("case.error");
            let text = e.to_string();
            if text.contains(substring) {
                Ok(())
            } else {
                Err(format!("the error {text:?} does not contain {substring:?}"))
            }
        }
        (None, Some(substring), Ok(got)) => Err(format!(
            "expected an error containing {substring:?}, got the rendering {got:?}"
        )),
        (None, None, _) => Err("the case has neither `expected` nor `error`".to_owned()),
    }
}

#[test]
fn renders_like_transformers() {
    let fixture = fixture();
    let templates = fixture["templates"].as_object().expect("templates");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(
        cases.len() >= 20,
        "only {} cases in the fixture",
        cases.len()
    );
    for name in templates.keys() {
        assert!(
            cases.iter().any(|c| c["template"] == name.as_str()),
            "template {name} has no case"
        );
    }
    assert!(
        cases.iter().any(|c| c.get("error").is_some()),
        "no error case in the fixture"
    );

    let mut report = String::new();
    let mut failed = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap_or("<unnamed>");
        if let Err(why) = run_case(templates, case) {
            failed += 1;
            let _ = writeln!(report, "  {name}: {why}");
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} cases differ from transformers {} (jinja2 {}):\n{report}",
        cases.len(),
        fixture["transformers"],
        fixture["jinja2"],
    );
}

#[test]
fn syntax_errors_fail_to_compile() {
    for source in [
        "{% for message in %}{% endfor %}",
        "{% if true %}never closed",
        "{{ messages[0] ",
        "{% endfor %}",
        "{% generation %}no end",
    ] {
        match ChatTemplate::new(source, Map::new()) {
            Ok(t) => panic!("{source:?} compiled: {t:?}"),
            Err(e) => assert!(!e.to_string().is_empty(), "{source:?}: empty error text"),
        }
    }
}

#[test]
fn raise_exception_message_reaches_the_error() {
    let template = ChatTemplate::new(
        "{{ raise_exception('no ' ~ messages | length ~ ' please') }}",
        Map::new(),
    )
    .expect("compiles");
    let err: ChatError = template
        .render(
            &[serde_json::json!({"role": "user", "content": "x"})],
            None,
            false,
        )
        .unwrap_err();
    assert!(err.to_string().contains("no 1 please"), "{err}");
}

#[test]
fn chat_template_is_shareable() {
    fn check<T: Clone + std::fmt::Debug + Send + Sync>() {}
    check::<ChatTemplate>();
}
