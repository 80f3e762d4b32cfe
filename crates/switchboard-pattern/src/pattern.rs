//! Parsing and validation of event patterns into a normalised form.
//!
//! A parsed [`Pattern`] is a disjunction of [`Branch`]es (the `$or`
//! expansion); each branch is a conjunction of [`Slot`]s, one per pattern
//! field; a slot lists the conditions that may satisfy the field (any one).

use serde_json::{Map, Value};

use crate::error::{PatternError, PatternErrorKind as K};
use crate::value::{Cidr, NumKey, Range, Wildcard, WildcardError, fold, num_key_from_number};

/// Hard upper bound for [`Limits::max_pattern_chars`] (the largest value the
/// EventBridge service quota can be raised to).
pub const MAX_PATTERN_CHARS_CEILING: usize = 4096;

/// Limits enforced when parsing a pattern. The defaults are EventBridge's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum pattern size in characters; default 2048. Values above
    /// [`MAX_PATTERN_CHARS_CEILING`] are treated as that ceiling.
    pub max_pattern_chars: usize,
    /// Maximum number of `$or` combinations (product of branch counts); default 1000.
    pub max_or_combinations: usize,
    /// Maximum total number of `*` over all `wildcard` operands of one
    /// pattern (our measure of "too complex"); default 100.
    pub max_wildcard_stars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pattern_chars: 2048,
            max_or_combinations: 1000,
            max_wildcard_stars: 100,
        }
    }
}

/// A validated event pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub(crate) branches: Vec<Branch>,
}

/// One conjunction of the `$or` expansion.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Branch {
    pub slots: Vec<Slot>,
}

/// One pattern field: satisfied when some leaf at `path` meets one of
/// `conds`, or (when `absent_ok`, from `exists: false`) when no leaf exists.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot {
    pub path: String,
    pub conds: Vec<Cond>,
    pub absent_ok: bool,
}

/// A scalar written in a pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Str(Box<str>),
    Num(NumKey),
    Bool(bool),
    Null,
}

/// One matching condition on a leaf value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    Exact(Scalar),
    /// `prefix`; when `ic` the text is already folded.
    Prefix {
        text: Box<str>,
        ic: bool,
    },
    Suffix {
        text: Box<str>,
        ic: bool,
    },
    /// Folded text.
    EqualsIgnoreCase(Box<str>),
    Wildcard(Wildcard),
    Numeric(Range),
    Cidr(Cidr),
    /// `exists: true`: any leaf.
    Exists,
    /// Matches every leaf the inner condition does not match.
    AnythingBut(AnythingBut),
}

/// The operand of `anything-but`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AnythingBut {
    /// Excluded strings and numbers (never mixed).
    Values(Vec<Scalar>),
    Prefix(Vec<Box<str>>),
    Suffix(Vec<Box<str>>),
    /// Folded texts.
    EqualsIgnoreCase(Vec<Box<str>>),
    Wildcard(Vec<Wildcard>),
}

const OPERATORS: &[&str] = &[
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
];

impl Pattern {
    /// Parses and validates an EventBridge event pattern.
    pub fn parse(json: &str, limits: &Limits) -> Result<Self, PatternError> {
        let max = limits.max_pattern_chars.min(MAX_PATTERN_CHARS_CEILING);
        let chars = json.chars().count();
        if chars > max {
            return Err(PatternError::new(
                "",
                K::TooLarge,
                format!("pattern is {chars} characters long, the limit is {max}"),
            ));
        }
        let value: Value = serde_json::from_str(json).map_err(|e| {
            PatternError::new(
                "",
                K::InvalidJson,
                format!("pattern is not valid JSON: {e}"),
            )
        })?;
        Self::from_value(&value, limits)
    }

    /// Validates an already parsed pattern (the size limit is not checked).
    pub fn from_value(value: &Value, limits: &Limits) -> Result<Self, PatternError> {
        let Value::Object(map) = value else {
            return Err(PatternError::new(
                "",
                K::NotAnObject,
                "pattern must be a JSON object",
            ));
        };
        let mut parser = Parser { limits, stars: 0 };
        let branches = parser.object(map, None)?;
        Ok(Self { branches })
    }

    /// Number of `$or` combinations this pattern expands to.
    pub fn combinations(&self) -> usize {
        self.branches.len()
    }

    /// The dotted field paths this pattern reads, deduplicated and sorted.
    pub fn paths(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .branches
            .iter()
            .flat_map(|b| b.slots.iter().map(|s| s.path.as_str()))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

struct Parser<'l> {
    limits: &'l Limits,
    stars: usize,
}

/// The path of `key` under `prefix`; `None` is the top level, which differs
/// from the path `""` of a field named by the empty string.
fn join(prefix: Option<&str>, key: &str) -> String {
    match prefix {
        None => key.to_owned(),
        Some(p) => format!("{p}.{key}"),
    }
}

fn is_or_operator(value: &Value) -> bool {
    match value {
        Value::Array(items) if items.len() >= 2 => items.iter().all(|item| match item {
            Value::Object(o) => !o.keys().any(|k| OPERATORS.contains(&k.as_str())),
            _ => false,
        }),
        _ => false,
    }
}

fn err(path: &str, kind: K, message: impl Into<String>) -> PatternError {
    PatternError::new(path, kind, message)
}

impl Parser<'_> {
    /// Returns the DNF of the object's fields under `prefix`.
    fn object(
        &mut self,
        map: &Map<String, Value>,
        prefix: Option<&str>,
    ) -> Result<Vec<Branch>, PatternError> {
        let mut dnf = vec![Branch::default()];
        for (key, value) in map {
            if key == "$or" && is_or_operator(value) {
                let Value::Array(alternatives) = value else {
                    continue;
                };
                let or_path = join(prefix, "$or");
                let mut expanded: Vec<Branch> = Vec::new();
                let mut alt_dnfs = Vec::with_capacity(alternatives.len());
                let mut alt_total = 0usize;
                for alt in alternatives {
                    let Value::Object(alt_map) = alt else {
                        continue;
                    };
                    let d = self.object(alt_map, prefix)?;
                    alt_total = alt_total.saturating_add(d.len());
                    alt_dnfs.push(d);
                    // Checked per alternative so an oversized `$or` fails
                    // before all of it is expanded.
                    if dnf.len().saturating_mul(alt_total) > self.limits.max_or_combinations {
                        break;
                    }
                }
                let total = dnf.len().saturating_mul(alt_total);
                if total > self.limits.max_or_combinations {
                    return Err(err(
                        &or_path,
                        K::TooManyCombinations,
                        format!(
                            "pattern expands to more than {} combinations",
                            self.limits.max_or_combinations
                        ),
                    ));
                }
                for base in &dnf {
                    for alt in alt_dnfs.iter().flatten() {
                        let mut b = base.clone();
                        b.slots.extend(alt.slots.iter().cloned());
                        expanded.push(b);
                    }
                }
                dnf = expanded;
                continue;
            }
            let path = join(prefix, key);
            match value {
                Value::Object(inner) => {
                    let sub = self.object(inner, Some(&path))?;
                    let total = dnf.len().saturating_mul(sub.len());
                    if total > self.limits.max_or_combinations {
                        return Err(err(
                            &path,
                            K::TooManyCombinations,
                            format!(
                                "pattern expands to more than {} combinations",
                                self.limits.max_or_combinations
                            ),
                        ));
                    }
                    if sub.len() == 1 {
                        for b in &mut dnf {
                            b.slots.extend(sub[0].slots.iter().cloned());
                        }
                    } else {
                        let mut expanded = Vec::with_capacity(total);
                        for base in &dnf {
                            for s in &sub {
                                let mut b = base.clone();
                                b.slots.extend(s.slots.iter().cloned());
                                expanded.push(b);
                            }
                        }
                        dnf = expanded;
                    }
                }
                Value::Array(items) => {
                    let slot = self.slot(items, path)?;
                    for b in &mut dnf {
                        b.slots.push(slot.clone());
                    }
                }
                _ => {
                    return Err(err(
                        &path,
                        K::InvalidValue,
                        "match value must be an array or an object",
                    ));
                }
            }
        }
        Ok(dnf)
    }

    fn slot(&mut self, items: &[Value], path: String) -> Result<Slot, PatternError> {
        if items.is_empty() {
            return Err(err(&path, K::EmptyArray, "empty arrays are not allowed"));
        }
        let mut conds = Vec::with_capacity(items.len());
        let mut absent_ok = false;
        for item in items {
            match item {
                Value::String(s) => conds.push(Cond::Exact(Scalar::Str(s.as_str().into()))),
                Value::Number(n) => conds.push(Cond::Exact(Scalar::Num(number(&path, n)?))),
                Value::Bool(b) => conds.push(Cond::Exact(Scalar::Bool(*b))),
                Value::Null => conds.push(Cond::Exact(Scalar::Null)),
                Value::Array(_) => {
                    return Err(err(
                        &path,
                        K::InvalidValue,
                        "arrays are not allowed inside a match array",
                    ));
                }
                Value::Object(op) => match self.operator(op, &path)? {
                    Some(c) => conds.push(c),
                    None => absent_ok = true,
                },
            }
        }
        Ok(Slot {
            path,
            conds,
            absent_ok,
        })
    }

    /// Parses one operator object; `None` stands for `exists: false`.
    fn operator(
        &mut self,
        op: &Map<String, Value>,
        path: &str,
    ) -> Result<Option<Cond>, PatternError> {
        let mut entries = op.iter();
        let (Some((name, arg)), None) = (entries.next(), entries.next()) else {
            return Err(err(
                path,
                K::UnknownOperator,
                "a match object must have exactly one operator key",
            ));
        };
        let cond = match name.as_str() {
            "prefix" | "suffix" => {
                let (text, ic) = match arg {
                    Value::String(s) => (Box::from(s.as_str()), false),
                    Value::Object(inner) => match single(inner) {
                        Some(("equals-ignore-case", Value::String(s))) => (fold(s).into(), true),
                        _ => {
                            return Err(err(
                                path,
                                K::InvalidOperand,
                                format!(
                                    "\"{name}\" must be a string or {{\"equals-ignore-case\": string}}"
                                ),
                            ));
                        }
                    },
                    _ => {
                        return Err(err(
                            path,
                            K::InvalidOperand,
                            format!("\"{name}\" must be a string"),
                        ));
                    }
                };
                if name == "prefix" {
                    Cond::Prefix { text, ic }
                } else {
                    Cond::Suffix { text, ic }
                }
            }
            "equals-ignore-case" => {
                Cond::EqualsIgnoreCase(fold(string_arg(name, arg, path)?).into())
            }
            "wildcard" => Cond::Wildcard(self.wildcard(string_arg(name, arg, path)?, path)?),
            "exists" => match arg {
                Value::Bool(true) => Cond::Exists,
                Value::Bool(false) => return Ok(None),
                _ => {
                    return Err(err(
                        path,
                        K::InvalidOperand,
                        "\"exists\" must be true or false",
                    ));
                }
            },
            "cidr" => {
                let s = string_arg(name, arg, path)?;
                Cond::Cidr(Cidr::parse(s).map_err(|m| err(path, K::InvalidOperand, m))?)
            }
            "numeric" => Cond::Numeric(numeric(arg, path)?),
            "anything-but" => Cond::AnythingBut(self.anything_but(arg, path)?),
            other => {
                return Err(err(
                    path,
                    K::UnknownOperator,
                    format!("unrecognized match type {other:?}"),
                ));
            }
        };
        Ok(Some(cond))
    }

    fn wildcard(&mut self, s: &str, path: &str) -> Result<Wildcard, PatternError> {
        let w = Wildcard::parse(s).map_err(|e| match e {
            WildcardError::BadEscape => err(
                path,
                K::InvalidOperand,
                format!("invalid escape in wildcard {s:?}: only \\* and \\\\ are allowed"),
            ),
            WildcardError::ConsecutiveStars => err(
                path,
                K::InvalidOperand,
                format!("consecutive wildcard characters in {s:?}"),
            ),
        })?;
        self.stars += w.stars();
        if self.stars > self.limits.max_wildcard_stars {
            return Err(err(
                path,
                K::TooComplex,
                format!(
                    "rule is too complex: more than {} wildcard characters",
                    self.limits.max_wildcard_stars
                ),
            ));
        }
        Ok(w)
    }

    fn anything_but(&mut self, arg: &Value, path: &str) -> Result<AnythingBut, PatternError> {
        let bad = |m: &str| err(path, K::InvalidOperand, format!("\"anything-but\" {m}"));
        match arg {
            Value::String(s) => Ok(AnythingBut::Values(vec![Scalar::Str(s.as_str().into())])),
            Value::Number(n) => Ok(AnythingBut::Values(vec![Scalar::Num(number(path, n)?)])),
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(err(path, K::EmptyArray, "empty arrays are not allowed"));
                }
                if items.iter().all(Value::is_string) {
                    Ok(AnythingBut::Values(
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|s| Scalar::Str(s.into()))
                            .collect(),
                    ))
                } else if items.iter().all(Value::is_number) {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        if let Value::Number(n) = item {
                            out.push(Scalar::Num(number(path, n)?));
                        }
                    }
                    Ok(AnythingBut::Values(out))
                } else {
                    Err(bad("list must contain only strings or only numbers"))
                }
            }
            Value::Object(inner) => {
                let Some((op, operand)) = single(inner) else {
                    return Err(bad("object must have exactly one key"));
                };
                let texts: Vec<&str> = match operand {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(items)
                        if !items.is_empty() && items.iter().all(Value::is_string) =>
                    {
                        items.iter().filter_map(Value::as_str).collect()
                    }
                    _ => {
                        return Err(bad(&format!(
                            "\"{op}\" must be a string or a non-empty list of strings"
                        )));
                    }
                };
                match op {
                    "prefix" => Ok(AnythingBut::Prefix(
                        texts.into_iter().map(Box::from).collect(),
                    )),
                    "suffix" => Ok(AnythingBut::Suffix(
                        texts.into_iter().map(Box::from).collect(),
                    )),
                    "equals-ignore-case" => Ok(AnythingBut::EqualsIgnoreCase(
                        texts.into_iter().map(|t| fold(t).into()).collect(),
                    )),
                    "wildcard" => {
                        let mut out = Vec::with_capacity(texts.len());
                        for t in texts {
                            out.push(self.wildcard(t, path)?);
                        }
                        Ok(AnythingBut::Wildcard(out))
                    }
                    other => Err(bad(&format!("does not support {other:?}"))),
                }
            }
            _ => Err(bad("must be a string, a number, a list or an object")),
        }
    }
}

fn single(map: &Map<String, Value>) -> Option<(&str, &Value)> {
    let mut it = map.iter();
    match (it.next(), it.next()) {
        (Some((k, v)), None) => Some((k.as_str(), v)),
        _ => None,
    }
}

fn string_arg<'v>(name: &str, arg: &'v Value, path: &str) -> Result<&'v str, PatternError> {
    arg.as_str().ok_or_else(|| {
        err(
            path,
            K::InvalidOperand,
            format!("\"{name}\" must be a string"),
        )
    })
}

fn number(path: &str, n: &serde_json::Number) -> Result<NumKey, PatternError> {
    num_key_from_number(n).ok_or_else(|| err(path, K::InvalidOperand, "number out of range"))
}

fn numeric(arg: &Value, path: &str) -> Result<Range, PatternError> {
    let bad = |m: String| err(path, K::InvalidOperand, format!("\"numeric\" {m}"));
    let Value::Array(items) = arg else {
        return Err(bad("must be an array".into()));
    };
    let pair = |i: usize| -> Result<(&str, f64), PatternError> {
        let op = items[i]
            .as_str()
            .ok_or_else(|| bad(format!("expects a comparison operator at position {i}")))?;
        let n = match items.get(i + 1) {
            Some(Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()),
            _ => None,
        }
        .ok_or_else(|| bad(format!("expects a number after {op:?}")))?;
        Ok((op, if n == 0.0 { 0.0 } else { n }))
    };
    let mut r = Range {
        lo: f64::NEG_INFINITY,
        lo_incl: false,
        hi: f64::INFINITY,
        hi_incl: false,
    };
    match items.len() {
        2 => {
            let (op, n) = pair(0)?;
            match op {
                "=" => {
                    r = Range {
                        lo: n,
                        lo_incl: true,
                        hi: n,
                        hi_incl: true,
                    }
                }
                "<" | "<=" => {
                    r.hi = n;
                    r.hi_incl = op == "<=";
                }
                ">" | ">=" => {
                    r.lo = n;
                    r.lo_incl = op == ">=";
                }
                other => return Err(bad(format!("has an unknown operator {other:?}"))),
            }
        }
        4 => {
            let (lo_op, lo) = pair(0)?;
            let (hi_op, hi) = pair(2)?;
            if !matches!(lo_op, ">" | ">=") || !matches!(hi_op, "<" | "<=") {
                return Err(bad(
                    "range must be a lower bound (\">\" or \">=\") followed by an upper bound (\"<\" or \"<=\")".into(),
                ));
            }
            if lo >= hi {
                return Err(bad(
                    "range lower bound must be less than the upper bound".into()
                ));
            }
            r = Range {
                lo,
                lo_incl: lo_op == ">=",
                hi,
                hi_incl: hi_op == "<=",
            };
        }
        _ => {
            return Err(bad(
                "must be [op, number] or [op, number, op, number]".into()
            ));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &str) -> Result<Pattern, PatternError> {
        Pattern::parse(p, &Limits::default())
    }

    #[test]
    fn errors_name_the_path() {
        let check = |p: &str, want: &str| match parse(p) {
            Ok(_) => panic!("{p} parsed"),
            Err(e) => assert_eq!(e.to_string(), want, "{p}"),
        };
        check(
            r#"{"detail":{"eventBody":{"mediaType":[{"prefix":1}]}}}"#,
            r#"InvalidEventPatternException: detail.eventBody.mediaType: "prefix" must be a string"#,
        );
        check(
            r#"{"a":[]}"#,
            "InvalidEventPatternException: a: empty arrays are not allowed",
        );
        check(
            r#"{"a":"x"}"#,
            "InvalidEventPatternException: a: match value must be an array or an object",
        );
        check(
            r#"[1]"#,
            "InvalidEventPatternException: pattern must be a JSON object",
        );
        check(
            r#"{"a":[{"foo":1}]}"#,
            r#"InvalidEventPatternException: a: unrecognized match type "foo""#,
        );
    }

    #[test]
    fn rejections() {
        for p in [
            r#"{"a":[{"anything-but":["a",1]}]}"#,
            r#"{"a":[{"anything-but":[]}]}"#,
            r#"{"a":[{"anything-but":true}]}"#,
            r#"{"a":[{"anything-but":{"numeric":[">",1]}}]}"#,
            r#"{"a":[{"wildcard":"a**b"}]}"#,
            r#"{"a":[{"wildcard":"a\\b"}]}"#,
            r#"{"a":[{"numeric":["<"]}]}"#,
            r#"{"a":[{"numeric":["<",5,">",1]}]}"#,
            r#"{"a":[{"numeric":[">",5,"<",1]}]}"#,
            r#"{"a":[{"numeric":["!=",5]}]}"#,
            r#"{"a":[{"numeric":["<","5"]}]}"#,
            r#"{"a":[{"numeric":["=",1,"<",5]}]}"#,
            r#"{"a":[{"cidr":"10.0.0.1/32"}]}"#,
            r#"{"a":[{"cidr":"::1/128"}]}"#,
            r#"{"a":[{"cidr":"10.0.0.300/8"}]}"#,
            r#"{"a":[{"cidr":"10.0.0.0"}]}"#,
            r#"{"a":[{"exists":"yes"}]}"#,
            r#"{"a":[{"prefix":"a","suffix":"b"}]}"#,
            r#"{"a":[{"prefix":{"equals-ignore-case":1}}]}"#,
            r#"{"a":[[1]]}"#,
            r#"{"a":1}"#,
            r#"{"$or":[{"a":[1]},{"b":[{"bogus":1}]}]}"#,
        ] {
            assert!(parse(p).is_err(), "{p} should be rejected");
        }
    }

    #[test]
    fn limits() {
        let big = format!(r#"{{"a":["{}"]}}"#, "x".repeat(2100));
        assert_eq!(parse(&big).unwrap_err().kind(), K::TooLarge);
        let limits = Limits {
            max_pattern_chars: 4096,
            ..Limits::default()
        };
        assert!(Pattern::parse(&big, &limits).is_ok());
        let huge = Limits {
            max_pattern_chars: 1 << 20,
            ..Limits::default()
        };
        let too_big = format!(r#"{{"a":["{}"]}}"#, "x".repeat(5000));
        assert_eq!(
            Pattern::parse(&too_big, &huge).unwrap_err().kind(),
            K::TooLarge
        );

        // 10 x 10 x 10 = 1000 combinations is allowed, 10 x 10 x 11 is not.
        let or = |n: usize, f: &str| {
            let alts: Vec<String> = (0..n).map(|i| format!(r#"{{"{f}":[{i}]}}"#)).collect();
            format!("[{}]", alts.join(","))
        };
        let ok = format!(
            r#"{{"x":{{"$or":{}}},"y":{{"$or":{}}},"$or":{}}}"#,
            or(10, "a"),
            or(10, "b"),
            or(10, "c")
        );
        let limits = Limits {
            max_pattern_chars: 4096,
            ..Limits::default()
        };
        assert_eq!(Pattern::parse(&ok, &limits).unwrap().combinations(), 1000);
        let bad = format!(
            r#"{{"x":{{"$or":{}}},"y":{{"$or":{}}},"$or":{}}}"#,
            or(10, "a"),
            or(10, "b"),
            or(11, "c")
        );
        assert_eq!(
            Pattern::parse(&bad, &limits).unwrap_err().kind(),
            K::TooManyCombinations
        );

        let stars = format!(r#"{{"a":[{{"wildcard":"{}"}}]}}"#, "a*".repeat(101));
        assert_eq!(parse(&stars).unwrap_err().kind(), K::TooComplex);
    }

    #[test]
    fn or_needs_two_object_branches_without_operators() {
        // A single-branch `$or` is an ordinary field named "$or".
        let p = parse(r#"{"$or":[{"a":[1]}]}"#);
        // Its value is an array holding an object without a known operator.
        assert!(p.is_err());
        let p = parse(r#"{"$or":["x"]}"#).unwrap();
        assert_eq!(p.paths(), vec!["$or"]);
        let p = parse(r#"{"$or":[{"prefix":"a"},{"prefix":"b"}]}"#).unwrap();
        assert_eq!(p.paths(), vec!["$or"]);
        let p = parse(r#"{"$or":[{"a":[1]},{"b":[2]}]}"#).unwrap();
        assert_eq!(p.combinations(), 2);
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let a = parse(r#"{"a":["x"],"a":["y"]}"#).unwrap();
        let b = parse(r#"{"a":["y"]}"#).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn nested_and_dotted_keys_are_the_same_path() {
        let a = parse(r#"{"a":{"b":[1]}}"#).unwrap();
        let b = parse(r#"{"a.b":[1]}"#).unwrap();
        assert_eq!(a, b);
    }
}
