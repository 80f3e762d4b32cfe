//! Key templates for S3 object keys and SQS FIFO message groups. Pure, so the configuration
//! validates them with the same parser the targets render with.
//!
//! `{a.b.c}` is a dotted path into the event being sent (strings as is, numbers and booleans as
//! text, anything else or missing as `_`); `{$yyyy}`, `{$mm}`, `{$dd}`, `{$hh}` are the UTC date
//! of the send, `{$id}` the envelope id. Substituted values are restricted to
//! `[A-Za-z0-9._=-]` (others become `_`) so a value can never add a `/` or `..` to a key.

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Path(Vec<String>),
    Year,
    Month,
    Day,
    Hour,
    Id,
}

/// What a template is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    /// The event (or transformed payload).
    pub event: &'a Value,
    /// The envelope id.
    pub id: &'a str,
    /// When (UTC).
    pub now: time::OffsetDateTime,
}

impl Template {
    /// Parses `text`; errors name the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(format!("unclosed '{{' in template {text:?}"));
            };
            let name = &after[..close];
            let part = match name {
                "$yyyy" => Part::Year,
                "$mm" => Part::Month,
                "$dd" => Part::Day,
                "$hh" => Part::Hour,
                "$id" => Part::Id,
                n if n.starts_with('$') => {
                    return Err(format!(
                        "unknown template variable {{{n}}} (known: $yyyy $mm $dd $hh $id)"
                    ));
                }
                "" => return Err(format!("empty placeholder {{}} in template {text:?}")),
                n => Part::Path(n.split('.').map(str::to_owned).collect()),
            };
            parts.push(part);
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched '}}' in template {text:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Renders the template.
    pub fn render(&self, ctx: &RenderContext<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Path(path) => {
                    let mut v = ctx.event;
                    for seg in path {
                        v = v.get(seg).unwrap_or(&Value::Null);
                    }
                    match v {
                        Value::String(s) => push_safe(&mut out, s),
                        Value::Number(n) => push_safe(&mut out, &n.to_string()),
                        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                        _ => out.push('_'),
                    }
                }
                Part::Year => out.push_str(&format!("{:04}", ctx.now.year())),
                Part::Month => out.push_str(&format!("{:02}", u8::from(ctx.now.month()))),
                Part::Day => out.push_str(&format!("{:02}", ctx.now.day())),
                Part::Hour => out.push_str(&format!("{:02}", ctx.now.hour())),
                Part::Id => push_safe(&mut out, ctx.id),
            }
        }
        out
    }
}

fn push_safe(out: &mut String, value: &str) {
    if value.is_empty() || value == "." || value == ".." {
        out.push('_');
        return;
    }
    out.extend(value.chars().map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '=' | '-') {
            c
        } else {
            '_'
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_paths_dates_and_ids_safely() {
        let t = Template::parse("genesys/{detail-type}/{$yyyy}/{$mm}/{$dd}/{$id}.json").unwrap();
        let ev = json!({"detail-type": "v2.users.{id}.presence"});
        let now = time::macros::datetime!(2026-11-23 09:05 UTC);
        let key = t.render(&RenderContext {
            event: &ev,
            id: "abc",
            now,
        });
        assert_eq!(key, "genesys/v2.users._id_.presence/2026/11/23/abc.json");
    }

    #[test]
    fn missing_and_hostile_values_cannot_escape_the_prefix() {
        let t = Template::parse("p/{detail.a}/{detail.b}/{detail.c}").unwrap();
        let ev = json!({"detail": {"a": "../../etc", "b": ".."}});
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let key = t.render(&RenderContext {
            event: &ev,
            id: "x",
            now,
        });
        assert_eq!(key, "p/.._.._etc/_/_");
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        assert!(Template::parse("a/{b").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a/}").unwrap_err().contains("unmatched"));
        assert!(Template::parse("{$week}").unwrap_err().contains("$week"));
        assert!(Template::parse("{}").unwrap_err().contains("empty"));
    }
}
