//! Target input: `Input`, `InputPath` and `InputTransformer`, as EventBridge
//! applies them to a matched event.
//!
//! See [`TargetInput`] for the choices made where AWS is silent.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::TransformError;

/// Maximum length of `Input` and `InputTemplate`.
const MAX_TEXT: usize = 8192;
/// Maximum length of a JSONPath.
const MAX_PATH: usize = 256;
/// Maximum number of `InputPathsMap` entries.
const MAX_PATHS: usize = 100;

const RULE_ARN: &str = "aws.events.rule-arn";
const RULE_NAME: &str = "aws.events.rule-name";
const INGESTION_TIME: &str = "aws.events.event.ingestion-time";
const EVENT: &str = "aws.events.event";
const EVENT_JSON: &str = "aws.events.event.json";

/// `InputTransformer` as it appears in the EventBridge API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct InputTransformerSpec {
    /// Variable name → JSONPath.
    #[serde(rename = "InputPathsMap", default)]
    pub input_paths_map: BTreeMap<String, String>,
    /// Template with `<name>` placeholders.
    #[serde(rename = "InputTemplate")]
    pub input_template: String,
}

/// Values EventBridge supplies to the reserved template variables.
#[derive(Debug, Clone, Copy)]
pub struct TransformContext<'a> {
    /// `<aws.events.rule-name>`.
    pub rule_name: &'a str,
    /// `<aws.events.rule-arn>`.
    pub rule_arn: &'a str,
    /// `<aws.events.event.ingestion-time>`, RFC 3339.
    pub ingestion_time: &'a str,
}

/// What a target receives for a matched event.
///
/// # Choices where the AWS documentation is silent
///
/// * A JSONPath that selects nothing leaves its variable undefined. In a JSON
///   template an unquoted undefined variable renders as `null` and a quoted
///   one as an empty string; in a plain-text template it renders as nothing.
///   An `InputPath` that selects nothing yields `null`.
/// * Variables inside a JSON string are escaped so the output is always valid
///   JSON (EventBridge documents that it does not escape and may produce
///   invalid JSON). JSON output is minified, as EventBridge does.
/// * A path with `*` yields an array of everything it selects.
/// * `<name>` where `name` looks like a variable (`[A-Za-z0-9_.-]+`) but is
///   neither a key of `InputPathsMap` nor a reserved variable is rejected
///   when the transformer is built; other `<` characters are literal text.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetInput {
    /// The whole event (no input configuration).
    MatchedEvent,
    /// `Input`: constant JSON text, sent as is.
    Constant(String),
    /// `InputPath`: part of the event.
    InputPath(JsonPath),
    /// `InputTransformer`.
    Transformer(InputTransformer),
}

impl TargetInput {
    /// Builds the target input from the three mutually exclusive AWS target
    /// fields; at most one may be set.
    pub fn from_aws(
        input: Option<&str>,
        input_path: Option<&str>,
        transformer: Option<&InputTransformerSpec>,
    ) -> Result<Self, TransformError> {
        let set = [input.is_some(), input_path.is_some(), transformer.is_some()]
            .iter()
            .filter(|&&b| b)
            .count();
        if set > 1 {
            return Err(TransformError::Conflicting);
        }
        if let Some(text) = input {
            let n = text.chars().count();
            if n > MAX_TEXT {
                return Err(TransformError::InvalidInput(format!(
                    "{n} characters, at most {MAX_TEXT} are allowed"
                )));
            }
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| TransformError::InvalidInput(format!("not valid JSON: {e}")))?;
            return Ok(Self::Constant(text.to_owned()));
        }
        if let Some(path) = input_path {
            return Ok(Self::InputPath(JsonPath::parse(path)?));
        }
        if let Some(spec) = transformer {
            return Ok(Self::Transformer(InputTransformer::new(spec)?));
        }
        Ok(Self::MatchedEvent)
    }

    /// Produces the payload for the target.
    pub fn apply(
        &self,
        event: &Value,
        ctx: &TransformContext<'_>,
    ) -> Result<String, TransformError> {
        match self {
            Self::MatchedEvent => Ok(event.to_string()),
            Self::Constant(text) => Ok(text.clone()),
            Self::InputPath(path) => Ok(match path.select(event) {
                Some(v) => v.to_string(),
                None => "null".to_owned(),
            }),
            Self::Transformer(t) => t.apply(event, ctx),
        }
    }
}

/// A parsed JSONPath: `$`, `.name`, `['name']`, `[0]`, `.*` and `[*]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
    Any,
}

impl JsonPath {
    /// Parses a JSONPath of at most 256 characters.
    pub fn parse(text: &str) -> Result<Self, TransformError> {
        let bad = |reason: &str| TransformError::InvalidPath {
            path: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.chars().count() > MAX_PATH {
            return Err(bad("longer than 256 characters"));
        }
        let rest = text
            .strip_prefix('$')
            .ok_or_else(|| bad("must start with $"))?;
        let chars: Vec<char> = rest.chars().collect();
        let mut segments = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    let start = i;
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        i += 1;
                    }
                    let name: String = chars[start..i].iter().collect();
                    if name.is_empty() {
                        return Err(bad("empty field name"));
                    }
                    segments.push(if name == "*" {
                        Segment::Any
                    } else {
                        Segment::Key(name)
                    });
                }
                '[' => {
                    let close = chars[i..]
                        .iter()
                        .position(|&c| c == ']')
                        .ok_or_else(|| bad("unclosed ["))?;
                    let inner: String = chars[i + 1..i + close].iter().collect();
                    i += close + 1;
                    let quoted = (inner.starts_with('\'') && inner.ends_with('\''))
                        || (inner.starts_with('"') && inner.ends_with('"'));
                    if inner == "*" {
                        segments.push(Segment::Any);
                    } else if quoted && inner.len() >= 2 {
                        segments.push(Segment::Key(inner[1..inner.len() - 1].to_owned()));
                    } else if let Ok(n) = inner.parse::<usize>() {
                        segments.push(Segment::Index(n));
                    } else {
                        return Err(bad("brackets must hold an index, * or a quoted name"));
                    }
                }
                _ => return Err(bad("expected . or [")),
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Selects from `event`: the value, or with `*` an array of all selected
    /// values; `None` when nothing is selected.
    pub fn select(&self, event: &Value) -> Option<Value> {
        let mut current = vec![event];
        for seg in &self.segments {
            let mut next = Vec::new();
            for v in current {
                match (seg, v) {
                    (Segment::Key(k), Value::Object(m)) => next.extend(m.get(k)),
                    (Segment::Index(n), Value::Array(a)) => next.extend(a.get(*n)),
                    (Segment::Any, Value::Object(m)) => next.extend(m.values()),
                    (Segment::Any, Value::Array(a)) => next.extend(a.iter()),
                    _ => {}
                }
            }
            current = next;
        }
        if self.segments.contains(&Segment::Any) {
            if current.is_empty() {
                None
            } else {
                Some(Value::Array(current.into_iter().cloned().collect()))
            }
        } else {
            current.first().map(|v| (*v).clone())
        }
    }
}

/// A validated input transformer.
///
/// A template that parses as JSON once placeholders hold values is a JSON
/// template: unquoted placeholders become JSON values (strings quoted,
/// missing paths `null`), quoted ones are escaped into the string, and the
/// output is minified. Any other template is plain text with values inserted
/// raw. Missing paths: see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTransformer {
    paths: BTreeMap<String, JsonPath>,
    tokens: Vec<Token>,
    /// Whether the template is JSON (placeholders become JSON values) or
    /// plain text.
    json: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Text(String),
    Var { name: String, in_string: bool },
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        RULE_ARN | RULE_NAME | INGESTION_TIME | EVENT | EVENT_JSON
    )
}

impl InputTransformer {
    /// Validates an `InputTransformer`.
    pub fn new(spec: &InputTransformerSpec) -> Result<Self, TransformError> {
        if spec.input_paths_map.len() > MAX_PATHS {
            return Err(TransformError::TooManyPaths(spec.input_paths_map.len()));
        }
        let mut paths = BTreeMap::new();
        for (key, path) in &spec.input_paths_map {
            let bad = |reason: &str| TransformError::InvalidKey {
                key: key.clone(),
                reason: reason.to_owned(),
            };
            if key.is_empty() || key.len() > 256 {
                return Err(bad("must be 1 to 256 characters"));
            }
            if !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad("must match [A-Za-z0-9_-]+"));
            }
            if key.starts_with("AWS.") {
                return Err(bad("must not start with \"AWS.\""));
            }
            paths.insert(key.clone(), JsonPath::parse(path)?);
        }
        let template = &spec.input_template;
        let n = template.chars().count();
        if n == 0 || n > MAX_TEXT {
            return Err(TransformError::InvalidTemplate(format!(
                "must be 1 to {MAX_TEXT} characters, got {n}"
            )));
        }
        let tokens = tokenize(template, &paths)?;
        let json = probe_is_json(&tokens);
        let me = Self {
            paths,
            tokens,
            json,
        };
        let trimmed = template.trim();
        me.validate_positions(trimmed.starts_with('{') && trimmed.ends_with('}'))?;
        Ok(me)
    }

    /// `object_like`: the template is surrounded by braces, so AWS's
    /// "no placeholder as an object key" rule applies even when the text is
    /// not JSON.
    fn validate_positions(&self, object_like: bool) -> Result<(), TransformError> {
        for (i, tok) in self.tokens.iter().enumerate() {
            let Token::Var { name, in_string } = tok else {
                continue;
            };
            let whole_event = name == EVENT || name == EVENT_JSON;
            if whole_event && (!self.json || *in_string) {
                return Err(TransformError::InvalidTemplate(format!(
                    "<{name}> may only be used as a JSON field value"
                )));
            }
            if (self.json || object_like) && is_object_key(&self.tokens, i, *in_string) {
                return Err(TransformError::InvalidTemplate(format!(
                    "placeholder <{name}> cannot be used as an object key"
                )));
            }
        }
        Ok(())
    }

    fn lookup(&self, name: &str, event: &Value, ctx: &TransformContext<'_>) -> Option<Value> {
        match name {
            RULE_ARN => Some(Value::String(ctx.rule_arn.to_owned())),
            RULE_NAME => Some(Value::String(ctx.rule_name.to_owned())),
            INGESTION_TIME => Some(Value::String(ctx.ingestion_time.to_owned())),
            EVENT => {
                let mut e = event.clone();
                if let Value::Object(m) = &mut e {
                    m.shift_remove("detail");
                }
                Some(e)
            }
            EVENT_JSON => Some(event.clone()),
            _ => self.paths.get(name).and_then(|p| p.select(event)),
        }
    }

    /// Renders the template for `event`.
    pub fn apply(
        &self,
        event: &Value,
        ctx: &TransformContext<'_>,
    ) -> Result<String, TransformError> {
        let mut out = String::new();
        for tok in &self.tokens {
            match tok {
                Token::Text(t) => out.push_str(t),
                Token::Var { name, in_string } => {
                    let v = self.lookup(name, event, ctx);
                    match (self.json, in_string, v) {
                        (true, false, Some(v)) => out.push_str(&v.to_string()),
                        (true, false, None) => out.push_str("null"),
                        (true, true, Some(v)) => {
                            let raw = match v {
                                Value::String(s) => s,
                                other => other.to_string(),
                            };
                            let quoted = Value::String(raw).to_string();
                            out.push_str(&quoted[1..quoted.len() - 1]);
                        }
                        (false, _, Some(Value::String(s))) => out.push_str(&s),
                        (false, _, Some(v)) => out.push_str(&v.to_string()),
                        (_, _, None) => {}
                    }
                }
            }
        }
        if self.json {
            let v: Value = serde_json::from_str(&out)
                .map_err(|e| TransformError::InvalidOutput(e.to_string()))?;
            return Ok(v.to_string());
        }
        Ok(out)
    }
}

/// Splits a template into text and placeholders, noting for each placeholder
/// whether it sits inside a JSON string literal.
fn tokenize(
    template: &str,
    paths: &BTreeMap<String, JsonPath>,
) -> Result<Vec<Token>, TransformError> {
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut in_string = false;
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if in_string => {
                text.push(c);
                if let Some((_, e)) = chars.next() {
                    text.push(e);
                }
            }
            '"' => {
                in_string = !in_string;
                text.push(c);
            }
            '<' => {
                let rest = &template[i + 1..];
                let name = rest
                    .find('>')
                    .map(|end| &rest[..end])
                    .filter(|n| is_var_name(n));
                match name {
                    Some(name) => {
                        if !paths.contains_key(name) && !is_reserved(name) {
                            return Err(TransformError::InvalidTemplate(format!(
                                "unknown variable <{name}>: not in InputPathsMap and not reserved"
                            )));
                        }
                        if !text.is_empty() {
                            tokens.push(Token::Text(std::mem::take(&mut text)));
                        }
                        tokens.push(Token::Var {
                            name: name.to_owned(),
                            in_string,
                        });
                        // Skip the name and the closing '>'.
                        for _ in 0..name.chars().count() + 1 {
                            chars.next();
                        }
                    }
                    None => text.push(c),
                }
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        tokens.push(Token::Text(text));
    }
    Ok(tokens)
}

/// Whether the template is JSON once placeholders hold values.
fn probe_is_json(tokens: &[Token]) -> bool {
    let mut probe = String::new();
    for tok in tokens {
        match tok {
            Token::Text(t) => probe.push_str(t),
            Token::Var {
                in_string: true, ..
            } => probe.push('x'),
            Token::Var {
                in_string: false, ..
            } => probe.push_str("null"),
        }
    }
    serde_json::from_str::<serde::de::IgnoredAny>(&probe).is_ok()
}

/// Whether the placeholder at `tokens[i]` is (part of) an object key: the
/// next non-space text after it (after the closing quote when quoted) is `:`.
fn is_object_key(tokens: &[Token], i: usize, in_string: bool) -> bool {
    let mut need_quote = in_string;
    for tok in &tokens[i + 1..] {
        let Token::Text(t) = tok else {
            if need_quote {
                continue;
            }
            return false;
        };
        let mut chars = t.chars();
        while let Some(c) = chars.next() {
            if need_quote {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => need_quote = false,
                    _ => {}
                }
                continue;
            }
            if c.is_whitespace() {
                continue;
            }
            return c == ':';
        }
    }
    false
}
