//! Chat templates: instruct checkpoints' own Jinja templates, rendered as Hugging Face
//! `transformers` renders them (`apply_chat_template`), so a chat prompt is the exact text the model
//! was fine-tuned on.
//!
//! Where a template comes from ([`ChatTemplate::from_dir`], [`ChatTemplate::from_gguf`]): a
//! checkpoint folder's `chat_template.jinja` (what `transformers` ≥ 4.43 saves), else the
//! `chat_template` of its `tokenizer_config.json` (a string, or a list of named templates of
//! which `default` is used); a GGUF file's `tokenizer.chat_template`. The special-token strings
//! the templates refer to (`bos_token`, `eos_token`, `pad_token`, `unk_token`) come from the same
//! config, or from the GGUF vocabulary.
//!
//! The environment is `transformers`' (`_compile_jinja_template`) on minijinja: `trim_blocks` and
//! `lstrip_blocks`, loop controls, `raise_exception`, `strftime_now`, `namespace`, `dict`, a
//! `tojson` that writes what Python's `json.dumps` writes (no HTML escaping, `ensure_ascii=False`,
//! `", "` / `": "` separators, `indent`, `separators`, `sort_keys`), Python's string, list and dict
//! methods (`strip`, `startswith`, `split`, `items`, … through minijinja-contrib's pycompat), and
//! the `{% generation %}` block of assistant-mask templates, which only renders its body.
//! Undefined values behave as in Jinja2: printing one gives the empty string, reading an attribute
//! of one is an error. `shared/tests/chat_template.rs` checks all of it against `transformers`
//! itself on fixtures from `shared/tests/fixtures/gen_chat_templates.py`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value as Json};

/// Largest template accepted (bytes): real ones are a few KB, tool-use ones up to ~30 KB.
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;
/// Largest config file read while looking for a template.
const MAX_CONFIG_BYTES: u64 = 64 << 20;
const NAME: &str = "chat_template";

/// Errors of chat templates.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("the chat template is {size} bytes, over the {MAX_TEMPLATE_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("the chat template does not compile: {0}")]
    Compile(String),
    #[error("the chat template failed: {0}")]
    Render(String),
    #[error("invalid chat input: {0}")]
    Input(String),
}

/// A compiled chat template with the variables it renders with besides the conversation.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
    variables: Map<String, Json>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bytes", &self.source.len())
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A message renders as given, so a template can read any field; only the shape is checked.
fn check_message(i: usize, m: &Json) -> Result<(), ChatError> {
    let Some(obj) = m.as_object() else {
        return Err(ChatError::Input(format!("message {i} is not an object")));
    };
    match obj.get("role") {
        Some(Json::String(_)) => Ok(()),
        _ => Err(ChatError::Input(format!(
            "message {i} has no string `role`"
        ))),
    }
}

impl ChatTemplate {
    /// Compiles `source`. `variables` become template globals besides `messages`, `tools` and
    /// `add_generation_prompt` — usually the special-token strings (`bos_token`, `eos_token`, …).
    pub fn new(source: &str, variables: Map<String, Json>) -> Result<Self, ChatError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(ChatError::TooLarge { size: source.len() });
        }
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, without_generation_tags(source))
            .map_err(|e| ChatError::Compile(describe(&e)))?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            source: source.into(),
            variables,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The extra variables it renders with.
    pub fn variables(&self) -> &Map<String, Json> {
        &self.variables
    }

    /// Renders a conversation: `messages` are JSON objects with at least a string `role` (HF's and
    /// OpenAI's shape: `content` a string or a list of parts, any other fields as the template
    /// expects), `tools` a list of tool schemas. With `add_generation_prompt`, the text ends where
    /// the assistant's reply starts.
    pub fn render(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        for (i, m) in messages.iter().enumerate() {
            check_message(i, m)?;
        }
        let mut ctx: Map<String, Json> = self.variables.clone();
        ctx.insert("messages".into(), Json::Array(messages.to_vec()));
        // transformers always passes both, as None when absent: `tools is defined` holds.
        ctx.insert(
            "tools".into(),
            tools.map_or(Json::Null, |t| Json::Array(t.to_vec())),
        );
        ctx.insert("documents".into(), Json::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(add_generation_prompt),
        );
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| ChatError::Render(describe(&e)))?;
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(|e| ChatError::Render(describe(&e)))
    }

    /// A checkpoint folder's template: `chat_template.jinja`, else `tokenizer_config.json`'s
    /// `chat_template`; `None` when it has neither. Special-token strings come from
    /// `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, ChatError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            Some(read_json(&config_path)?)
        } else {
            None
        };
        let variables = config.as_ref().map(token_variables).unwrap_or_default();
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let source = read_text(&jinja)?;
            return Self::new(&source, variables).map(Some);
        }
        let Some(Json::Object(c)) = &config else {
            return Ok(None);
        };
        let source = match c.get("chat_template") {
            None | Some(Json::Null) => return Ok(None),
            Some(Json::String(s)) => s.clone(),
            Some(Json::Array(named)) => named_default(named).ok_or_else(|| ChatError::Config {
                path: config_path.clone(),
                reason: "`chat_template` is a list without a template named `default`".into(),
            })?,
            Some(_) => {
                return Err(ChatError::Config {
                    path: config_path,
                    reason: "`chat_template` must be a string or a list of {name, template}".into(),
                });
            }
        };
        Self::new(&source, variables).map(Some)
    }

    /// A GGUF file's template (`tokenizer.chat_template`) with its BOS / EOS strings.
    pub fn from_gguf(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, ChatError> {
        let mut variables = Map::new();
        if let Some(b) = bos_token {
            variables.insert("bos_token".into(), Json::String(b));
        }
        if let Some(e) = eos_token {
            variables.insert("eos_token".into(), Json::String(e));
        }
        Self::new(source, variables)
    }
}

/// The special-token strings of a `tokenizer_config.json` (`bos_token`, `eos_token`, `pad_token`,
/// `unk_token`) as template variables.
pub fn token_variables(config: &Json) -> Map<String, Json> {
    let mut variables = Map::new();
    for name in ["bos_token", "eos_token", "pad_token", "unk_token"] {
        if let Some(s) = config.get(name).and_then(token_text) {
            variables.insert(name.into(), Json::String(s));
        }
    }
    variables
}

/// The variables of a checkpoint folder's `tokenizer_config.json` (none without one).
pub fn folder_variables(dir: &Path) -> Result<Map<String, Json>, ChatError> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(Map::new());
    }
    Ok(token_variables(&read_json(&path)?))
}

/// `{"name": "default", "template": …}` out of a list of named templates.
fn named_default(named: &[Json]) -> Option<String> {
    named.iter().find_map(|t| {
        (t.get("name")?.as_str()? == "default")
            .then(|| t.get("template")?.as_str().map(str::to_string))
            .flatten()
    })
}

/// A token field of `tokenizer_config.json`: `"<s>"` or `{"content": "<s>", …}`.
fn token_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn read_text(path: &Path) -> Result<String, ChatError> {
    let meta = std::fs::metadata(path).map_err(|source| ChatError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ChatError::Config {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes, over the {MAX_CONFIG_BYTES}-byte limit",
                meta.len()
            ),
        });
    }
    std::fs::read_to_string(path).map_err(|source| ChatError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json(path: &Path) -> Result<Json, ChatError> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| ChatError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The error with its template line, and the causes minijinja chains (a failing
/// `raise_exception` message sits there).
fn describe(e: &minijinja::Error) -> String {
    let mut out = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        out.push_str(&format!(" (template line {line})"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!("; {s}"));
        source = s.source();
    }
    out
}

/// `{% generation %}…{% endgeneration %}` (transformers' assistant-mask tag) renders its body:
/// it becomes an always-true `if`, keeping its whitespace-control dashes.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (lead, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, trail) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => out.push_str(&format!("{{%{lead} {r} {trail}%}}")),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// Python's `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`,
/// transformers' `tojson`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.max(0) as usize)),
            (None, Some(s)) => Some(s.to_string()),
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ));
            }
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair of strings",
            ));
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut w = PyJson {
        out: String::new(),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    w.value(&json, 0);
    Ok(Value::from_safe_string(w.out))
}

/// A writer of Python's `json.dumps` text.
struct PyJson {
    out: String,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl PyJson {
    fn newline(&mut self, level: usize) {
        if let Some(ind) = &self.indent {
            self.out.push('\n');
            for _ in 0..level {
                self.out.push_str(ind);
            }
        }
    }

    fn value(&mut self, v: &Json, level: usize) {
        match v {
            Json::Null => self.out.push_str("null"),
            Json::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => self.out.push_str(&py_number(n)),
            Json::String(s) => self.string(s),
            Json::Array(items) => {
                if items.is_empty() {
                    self.out.push_str("[]");
                    return;
                }
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        let sep = self.item_sep.clone();
                        self.out.push_str(&sep);
                    }
                    self.newline(level + 1);
                    self.value(item, level + 1);
                }
                self.newline(level);
                self.out.push(']');
            }
            Json::Object(map) => {
                if map.is_empty() {
                    self.out.push_str("{}");
                    return;
                }
                let mut entries: Vec<(&String, &Json)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                self.out.push('{');
                for (i, (k, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        let sep = self.item_sep.clone();
                        self.out.push_str(&sep);
                    }
                    self.newline(level + 1);
                    self.string(k);
                    let sep = self.key_sep.clone();
                    self.out.push_str(&sep);
                    self.value(item, level + 1);
                }
                self.newline(level);
                self.out.push('}');
            }
        }
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && (c as u32) > 0x7e) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        self.out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// A number as Python prints it: integers as they are, floats as `repr` (shortest round trip,
/// `1.0`, `1e-05`, `1e+16`).
fn py_number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let Some(x) = n.as_f64() else {
        return n.to_string();
    };
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // `{:e}` gives the shortest round-trip digits: "d.ddde-5".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// transformers' `strftime_now(format)`: the current UTC time formatted with the common
/// `strftime` directives (`%Y %y %m %d %e %B %b %A %a %H %I %M %S %p %j %%`).
fn strftime_now(format: String) -> Result<Value, minijinja::Error> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&format, secs)
        .map(Value::from)
        .map_err(|d| minijinja::Error::new(ErrorKind::InvalidOperation, d))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats Unix seconds (UTC).
fn strftime(format: &str, secs: i64) -> Result<String, String> {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let (hh, mm, ss) = (tod / 3600, tod / 60 % 60, tod % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hh + 11) % 12 + 1)),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => return Err(format!("strftime_now: unsupported directive %{other}")),
            None => return Err("strftime_now: the format ends with a lone %".into()),
        }
    }
    Ok(out)
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Map<String, Json> {
        json!({"bos_token": "<s>"}).as_object().unwrap().clone()
    }

    #[test]
    fn renders_a_conversation_with_the_generation_prompt() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}\
             {% if add_generation_prompt %}<assistant>{% endif %}",
            vars(),
        )
        .unwrap();
        let msgs = [json!({"role": "user", "content": "hi"})];
        assert_eq!(
            t.render(&msgs, None, true).unwrap(),
            "<s><user>hi\n<assistant>"
        );
        assert_eq!(t.render(&msgs, None, false).unwrap(), "<s><user>hi\n");
    }

    #[test]
    fn generation_tags_render_their_body_and_keep_whitespace_control() {
        assert_eq!(
            without_generation_tags("a {%- generation -%} b {% endgeneration %}"),
            "a {%- if true -%} b {% endif %}"
        );
        let t = ChatTemplate::new(
            "{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}",
            Map::new(),
        )
        .unwrap();
        let msgs = [json!({"role": "assistant", "content": "x"})];
        assert_eq!(t.render(&msgs, None, false).unwrap(), "[x]");
    }

    #[test]
    fn raise_exception_is_an_error_with_its_message() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}",
            Map::new(),
        )
        .unwrap();
        let e = t
            .render(&[json!({"role": "user", "content": "x"})], None, false)
            .unwrap_err();
        assert!(e.to_string().contains("system first"), "{e}");
    }

    #[test]
    fn bad_input_and_bad_templates_are_errors() {
        assert!(matches!(
            ChatTemplate::new("{% for %}", Map::new()),
            Err(ChatError::Compile(_))
        ));
        let t = ChatTemplate::new("{{ messages | length }}", Map::new()).unwrap();
        assert!(matches!(
            t.render(&[json!("hi")], None, false),
            Err(ChatError::Input(_))
        ));
        assert!(matches!(
            t.render(&[json!({"content": "hi"})], None, false),
            Err(ChatError::Input(_))
        ));
        let big = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        assert!(matches!(
            ChatTemplate::new(&big, Map::new()),
            Err(ChatError::TooLarge { .. })
        ));
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ messages[0] | tojson(separators=(',', ':'), sort_keys=true) }}",
            Map::new(),
        )
        .unwrap();
        let m = json!({"role": "user", "content": "<é & \"q\">\n", "n": [1, 2.5, 1e-5, 1e16, 3.0], "e": {}});
        let out = t.render(&[m], None, false).unwrap();
        let parts: Vec<&str> = out.split('|').collect();
        assert_eq!(
            parts[0],
            r#"{"role": "user", "content": "<é & \"q\">\n", "n": [1, 2.5, 1e-05, 1e+16, 3.0], "e": {}}"#
        );
        assert_eq!(
            parts[1],
            "{\n  \"role\": \"user\",\n  \"content\": \"<é & \\\"q\\\">\\n\",\n  \"n\": [\n    1,\n    2.5,\n    1e-05,\n    1e+16,\n    3.0\n  ],\n  \"e\": {}\n}"
        );
        assert_eq!(
            parts[2],
            r#"{"content":"<é & \"q\">\n","e":{},"n":[1,2.5,1e-05,1e+16,3.0],"role":"user"}"#
        );
    }

    #[test]
    fn strftime_matches_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %a %A %b %B %j %y %I%p %e%%", t).unwrap(),
            "2024-02-29 13:05:09 Thu Thursday Feb February 060 24 01PM 29%"
        );
        assert_eq!(strftime("%d %b %Y", 0).unwrap(), "01 Jan 1970");
        assert!(strftime("%Q", 0).is_err());
        for days in [-800_000, -1, 0, 59, 11_016, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn a_folder_template_and_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ChatTemplate::from_dir(dir.path()).unwrap().is_none());
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"bos_token": {"content": "<B>", "lstrip": false}, "eos_token": "<E>",
                "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]}"#,
        )
        .unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
        let msgs = [json!({"role": "user", "content": "x"})];
        assert_eq!(t.render(&msgs, None, false).unwrap(), "<B>x<E>");
        // chat_template.jinja wins over the config's.
        std::fs::write(dir.path().join("chat_template.jinja"), "J{{ bos_token }}").unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
        assert_eq!(t.render(&msgs, None, false).unwrap(), "J<B>");
        std::fs::remove_file(dir.path().join("chat_template.jinja")).unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"chat_template": 3}"#,
        )
        .unwrap();
        assert!(matches!(
            ChatTemplate::from_dir(dir.path()),
            Err(ChatError::Config { .. })
        ));
    }
}
