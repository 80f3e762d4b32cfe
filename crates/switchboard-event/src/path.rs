//! Field paths and key templates, resolved against the input JSON.
//!
//! Two path syntaxes are accepted because users copy paths from two worlds:
//! - dotted, with an optional `$.` prefix and `[n]` indexes: `$.detail.eventBody.participants[0].id`,
//!   `eventBody.conversationId` (a segment of digits also indexes an array: `participants.0.id`);
//! - RFC 6901 JSON Pointer when the path starts with `/`: `/detail/eventBody/id`
//!   (the only way to name a key that contains a dot).

use serde_json::{Map, Value};

/// Why a configured path or template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is empty (or only `$`).
    #[error("path is empty")]
    Empty,
    /// A dotted path has an empty segment, as in `a..b` or a trailing dot.
    #[error("path `{path}` has an empty segment")]
    EmptySegment {
        /// The path as configured.
        path: String,
    },
    /// A `[` is not followed by digits and `]`.
    #[error("path `{path}` has a malformed `[index]`")]
    BadIndex {
        /// The path as configured.
        path: String,
    },
    /// A JSON Pointer has a `~` not followed by `0` or `1`.
    #[error("JSON pointer `{path}` has an invalid `~` escape")]
    BadPointerEscape {
        /// The path as configured.
        path: String,
    },
    /// A template has a `{` without a matching `}`.
    #[error("template `{template}` has an unclosed `{{`")]
    UnclosedPlaceholder {
        /// The template as configured.
        template: String,
    },
    /// A template has a `}` that closes nothing (write `}}` for a literal brace).
    #[error("template `{template}` has an unmatched `}}` (write `}}}}` for a literal brace)")]
    UnmatchedBrace {
        /// The template as configured.
        template: String,
    },
    /// A template has no placeholder at all, so every event would get the same key.
    #[error(
        "template `{template}` has no `{{field}}` placeholder; every event would share one key"
    )]
    NoPlaceholder {
        /// The template as configured.
        template: String,
    },
}

/// A parsed field path: a list of segments, each an object key or (on arrays) an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldPath {
    segments: Vec<String>,
}

impl FieldPath {
    pub(crate) fn parse(path: &str) -> Result<Self, PathError> {
        if let Some(pointer) = path.strip_prefix('/') {
            let mut segments = Vec::new();
            for raw in pointer.split('/') {
                segments.push(unescape_pointer(raw).ok_or_else(|| {
                    PathError::BadPointerEscape {
                        path: path.to_owned(),
                    }
                })?);
            }
            return Ok(Self { segments });
        }
        let body = path.strip_prefix("$.").unwrap_or(path);
        let body = if body == "$" { "" } else { body };
        if body.is_empty() {
            return Err(PathError::Empty);
        }
        let mut segments = Vec::new();
        for part in body.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if key.is_empty() && (rest.is_empty() || segments.is_empty()) {
                return Err(PathError::EmptySegment {
                    path: path.to_owned(),
                });
            }
            if !key.is_empty() {
                segments.push(key.to_owned());
            }
            while !rest.is_empty() {
                let close = rest.find(']').ok_or_else(|| PathError::BadIndex {
                    path: path.to_owned(),
                })?;
                let digits = &rest[1..close];
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(PathError::BadIndex {
                        path: path.to_owned(),
                    });
                }
                segments.push(digits.to_owned());
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(PathError::BadIndex {
                        path: path.to_owned(),
                    });
                }
            }
        }
        Ok(Self { segments })
    }

    #[cfg(test)]
    pub(crate) fn lookup<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut cur = root;
        for seg in &self.segments {
            cur = step(cur, seg)?;
        }
        Some(cur)
    }

    /// Lookup from an object's fields, for callers that hold a `Map` rather than a `Value`.
    pub(crate) fn lookup_in<'v>(&self, root: &'v Map<String, Value>) -> Option<&'v Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut cur = root.get(first)?;
        for seg in rest {
            cur = step(cur, seg)?;
        }
        Some(cur)
    }
}

fn step<'v>(cur: &'v Value, seg: &str) -> Option<&'v Value> {
    match cur {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => items.get(seg.parse::<usize>().ok()?),
        _ => None,
    }
}

fn unescape_pointer(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(FieldPath),
}

/// A parsed key template such as `{conversationId}:{eventType}:{timestamp}`.
///
/// `{path}` is a field path (see the module docs); `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyTemplate {
    pieces: Vec<Piece>,
}

impl KeyTemplate {
    pub(crate) fn parse(template: &str) -> Result<Self, PathError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        let mut fields = 0usize;
        while let Some(c) = rest.chars().next() {
            if let Some(r) = rest.strip_prefix("{{") {
                literal.push('{');
                rest = r;
            } else if let Some(r) = rest.strip_prefix("}}") {
                literal.push('}');
                rest = r;
            } else if c == '}' {
                return Err(PathError::UnmatchedBrace {
                    template: template.to_owned(),
                });
            } else if c == '{' {
                let close = rest
                    .find('}')
                    .ok_or_else(|| PathError::UnclosedPlaceholder {
                        template: template.to_owned(),
                    })?;
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Field(FieldPath::parse(&rest[1..close])?));
                fields += 1;
                rest = &rest[close + 1..];
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if fields == 0 {
            return Err(PathError::NoPlaceholder {
                template: template.to_owned(),
            });
        }
        Ok(Self { pieces })
    }

    /// Renders the template, or `None` when a field is missing or null: a key built from a
    /// missing field would make unrelated events collide, and a false duplicate loses an event.
    pub(crate) fn render(&self, root: &Map<String, Value>) -> Option<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Field(path) => match path.lookup_in(root)? {
                    Value::Null => return None,
                    Value::String(s) => out.push_str(s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(path: &str, v: &Value) -> Option<Value> {
        FieldPath::parse(path).unwrap().lookup(v).cloned()
    }

    #[test]
    fn path_syntaxes_resolve_the_same_field() {
        let v = json!({"detail": {"eventBody": {"participants": [{"id": "p0"}, {"id": "p1"}]}, "a.b": 1}});
        for p in [
            "$.detail.eventBody.participants[1].id",
            "detail.eventBody.participants.1.id",
            "/detail/eventBody/participants/1/id",
        ] {
            assert_eq!(get(p, &v), Some(json!("p1")), "{p}");
        }
        assert_eq!(get("/detail/a.b", &v), Some(json!(1)));
        assert_eq!(get("detail.missing", &v), None);
        assert_eq!(get("detail.eventBody.participants[7]", &v), None);
        assert_eq!(get("detail.eventBody.participants.x", &v), None);
    }

    #[test]
    fn bad_paths_are_rejected() {
        for p in [
            "", "$", "$.", "a..b", "a.", "a[", "a[x]", "a[]", "a[0]b", "/a~2",
        ] {
            assert!(FieldPath::parse(p).is_err(), "{p:?} should not parse");
        }
    }

    #[test]
    fn templates_parse_and_render() {
        let v = json!({"conversationId": "c1", "eventType": "E", "timestamp": 17, "n": null});
        let v = v.as_object().unwrap();
        let t = KeyTemplate::parse("{conversationId}:{eventType}:{timestamp}").unwrap();
        assert_eq!(t.render(v).as_deref(), Some("c1:E:17"));
        let t = KeyTemplate::parse("{{lit}}-{eventType}").unwrap();
        assert_eq!(t.render(v).as_deref(), Some("{lit}-E"));
        assert_eq!(
            KeyTemplate::parse("{missing}:{eventType}")
                .unwrap()
                .render(v),
            None
        );
        assert_eq!(KeyTemplate::parse("{n}").unwrap().render(v), None);
        for bad in ["{a", "a}", "{}", "no placeholder", "{{only}}"] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
