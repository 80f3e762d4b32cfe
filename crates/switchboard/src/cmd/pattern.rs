//! `test-pattern`, `transform` and `match`: the pattern engine from the shell.
//!
//! Exit codes: 0 on success (whatever the match result), 2 when the pattern,
//! transformer or event given is invalid (the message on stderr starts with
//! the AWS exception name), 1 for other failures (unreadable files).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;
use switchboard_pattern::{
    InputTransformerSpec, Limits, Matcher, Pattern, Scratch, TargetInput, TransformContext,
};

const INVALID: u8 = 2;

/// `switchboard test-pattern`: like `aws events test-event-pattern`.
#[derive(Debug, Args)]
pub struct TestPatternArgs {
    /// The event pattern: JSON text, or @file.
    #[arg(long = "event-pattern", value_name = "JSON|@FILE")]
    pub event_pattern: String,
    /// The event: JSON text, or @file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub event: String,
}

/// `switchboard transform`: apply a target's input configuration to an event.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input_kind").required(true).multiple(false)
    .args(["input_transformer", "input_path", "input"])))]
pub struct TransformArgs {
    /// The event: JSON text, or @file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub event: String,
    /// An InputTransformer ({"InputPathsMap": {...}, "InputTemplate": "..."}): JSON text, or @file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub input_transformer: Option<String>,
    /// An InputPath (JSONPath such as $.detail).
    #[arg(long, value_name = "PATH")]
    pub input_path: Option<String>,
    /// A constant Input (JSON text).
    #[arg(long, value_name = "JSON")]
    pub input: Option<String>,
    /// Value of <aws.events.rule-name>.
    #[arg(long, default_value = "test-rule")]
    pub rule_name: String,
    /// Value of <aws.events.rule-arn>.
    #[arg(
        long,
        default_value = "arn:aws:events:us-east-1:123456789012:rule/test-rule"
    )]
    pub rule_arn: String,
    /// Value of <aws.events.event.ingestion-time> (default: the event's "time", else now).
    #[arg(long)]
    pub ingestion_time: Option<String>,
}

/// `switchboard match`: count matches per rule over a stream of events.
#[derive(Debug, Args)]
pub struct MatchArgs {
    /// Rules: a JSON object of name → pattern (object, or string holding one), or a JSON array.
    #[arg(long, value_name = "FILE")]
    pub rules: String,
    /// Events, one JSON object per line: a file, a .gz file, or - for stdin. A line is read only
    /// as far as the rules need, so one broken after the last key they could use is matched,
    /// not counted invalid: validate the file first where that matters.
    #[arg(long, value_name = "FILE|-")]
    pub events: String,
}

/// Reads `JSON | @file` arguments.
fn read_arg(value: &str) -> anyhow::Result<String> {
    match value.strip_prefix('@') {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading stdin")?;
            Ok(s)
        }
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}")),
        None => Ok(value.to_owned()),
    }
}

/// Runs `test-pattern`; prints the AWS CLI's (pretty-printed) response.
pub fn test_pattern(args: &TestPatternArgs) -> anyhow::Result<ExitCode> {
    let pattern_text = read_arg(&args.event_pattern)?;
    let event_text = read_arg(&args.event)?;
    let pattern = match Pattern::parse(&pattern_text, &Limits::default()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(INVALID));
        }
    };
    // The matcher reads only what rules can use, so it does not reject every
    // malformed event; AWS does, so the whole text is checked first.
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&event_text) {
        eprintln!("InvalidEventPatternException: Event is not valid: {e}");
        return Ok(ExitCode::from(INVALID));
    }
    match pattern.matches_json(event_text.as_bytes()) {
        Ok(result) => {
            println!("{{\n    \"Result\": {result}\n}}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("InvalidEventPatternException: Event is not valid: {e}");
            Ok(ExitCode::from(INVALID))
        }
    }
}

/// Runs `transform`; prints the payload the target would receive.
pub fn transform(args: &TransformArgs) -> anyhow::Result<ExitCode> {
    let event_text = read_arg(&args.event)?;
    let event: Value = match serde_json::from_str(&event_text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            eprintln!("ValidationException: the event must be a JSON object");
            return Ok(ExitCode::from(INVALID));
        }
        Err(e) => {
            eprintln!("ValidationException: the event is not valid JSON: {e}");
            return Ok(ExitCode::from(INVALID));
        }
    };
    let spec = match &args.input_transformer {
        Some(text) => match serde_json::from_str::<InputTransformerSpec>(&read_arg(text)?) {
            Ok(spec) => Some(spec),
            Err(e) => {
                eprintln!("ValidationException: invalid InputTransformer: {e}");
                return Ok(ExitCode::from(INVALID));
            }
        },
        None => None,
    };
    let target = match TargetInput::from_aws(
        args.input.as_deref(),
        args.input_path.as_deref(),
        spec.as_ref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(INVALID));
        }
    };
    let now;
    let ingestion_time = match (
        &args.ingestion_time,
        event.get("time").and_then(Value::as_str),
    ) {
        (Some(t), _) => t.as_str(),
        (None, Some(t)) => t,
        (None, None) => {
            now = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .context("formatting the current time")?;
            now.as_str()
        }
    };
    let ctx = TransformContext {
        rule_name: &args.rule_name,
        rule_arn: &args.rule_arn,
        ingestion_time,
    };
    match target.apply(&event, &ctx) {
        Ok(out) => {
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(INVALID))
        }
    }
}

/// Parses a rules file into (name, pattern) in file order.
fn load_rules(text: &str) -> Result<Vec<(String, Pattern)>, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("rules file is not valid JSON: {e}"))?;
    let entries: Vec<(String, &Value)> = match &value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return Err("rules file must be a JSON object or array".into()),
    };
    let limits = Limits::default();
    let mut out = Vec::with_capacity(entries.len());
    for (name, v) in entries {
        let parsed = match v {
            Value::String(s) => Pattern::parse(s, &limits),
            other => Pattern::parse(&other.to_string(), &limits),
        };
        out.push((
            name.clone(),
            parsed.map_err(|e| format!("rule {name:?}: {e}"))?,
        ));
    }
    Ok(out)
}

fn open_events(path: &str) -> anyhow::Result<Box<dyn BufRead>> {
    if path == "-" {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    if Path::new(path).extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        ))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

/// Runs `match`; prints `{rule: count}` on stdout and throughput on stderr.
pub fn match_events(args: &MatchArgs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(&args.rules).with_context(|| format!("reading {}", args.rules))?;
    let rules = match load_rules(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(INVALID));
        }
    };
    let mut matcher = Matcher::new();
    let mut index_by_name = HashMap::new();
    for (i, (name, pattern)) in rules.iter().enumerate() {
        if index_by_name.insert(name.as_str(), i).is_some() {
            bail!("rule {name:?} appears twice");
        }
        matcher.add_rule(name, pattern);
    }
    let mut counts = vec![0u64; rules.len()];
    // Internal rule id → index in `rules`, filled on first match.
    let mut by_id: Vec<Option<usize>> = Vec::new();
    let mut scratch = Scratch::new();
    let mut reader = open_events(&args.events)?;
    let (mut events, mut invalid) = (0u64, 0u64);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let start = Instant::now();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", args.events))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        events += 1;
        let result = matcher.for_each_match_json(trimmed, &mut scratch, |id, name| {
            if by_id.len() <= id {
                by_id.resize(id + 1, None);
            }
            let idx = match by_id[id] {
                Some(i) => Some(i),
                None => {
                    let i = index_by_name.get(name).copied();
                    by_id[id] = i;
                    i
                }
            };
            if let Some(idx) = idx {
                counts[idx] += 1;
            }
        });
        if let Err(e) = result {
            invalid += 1;
            if invalid <= 5 {
                eprintln!("line {line_no}: {e}");
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let out: serde_json::Map<String, Value> = rules
        .iter()
        .zip(&counts)
        .map(|((name, _), &c)| (name.clone(), Value::from(c)))
        .collect();
    println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    let rate = if secs > 0.0 {
        events as f64 / secs
    } else {
        0.0
    };
    eprintln!(
        "{events} events ({invalid} invalid) through {} rules in {secs:.3} s: {rate:.0} events/s",
        rules.len()
    );
    Ok(ExitCode::SUCCESS)
}
