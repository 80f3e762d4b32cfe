//! A deliberately simple reference interpreter of event patterns over
//! `serde_json::Value`, written independently of the crate's matcher: it
//! flattens the whole event, expands `$or` recursively and searches every
//! combination of leaves by brute force. Slow and obviously correct is the
//! point; the property test compares the compiled matcher against it.
#![allow(dead_code)]

use serde_json::{Map, Value};

/// One event leaf: dotted path, value, and (array id, element index) trail.
#[derive(Debug)]
struct Leaf<'a> {
    path: String,
    value: &'a Value,
    trail: Vec<(usize, usize)>,
}

fn flatten<'a>(
    v: &'a Value,
    path: Option<&str>,
    trail: &mut Vec<(usize, usize)>,
    next: &mut usize,
    out: &mut Vec<Leaf<'a>>,
) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = match path {
                    None => k.clone(),
                    Some(path) => format!("{path}.{k}"),
                };
                flatten(v, Some(&p), trail, next, out);
            }
        }
        Value::Array(items) => {
            let id = *next;
            *next += 1;
            for (i, item) in items.iter().enumerate() {
                trail.push((id, i));
                flatten(item, path, trail, next, out);
                trail.pop();
            }
        }
        leaf => out.push(Leaf {
            path: path.unwrap_or("").to_owned(),
            value: leaf,
            trail: trail.clone(),
        }),
    }
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

/// (path, conditions) of one conjunction.
type Conj<'p> = Vec<(String, &'p [Value])>;

fn dnf<'p>(obj: &'p Map<String, Value>, prefix: Option<&str>) -> Vec<Conj<'p>> {
    let mut out: Vec<Conj<'p>> = vec![Vec::new()];
    for (k, v) in obj {
        let is_or = k == "$or"
            && matches!(v, Value::Array(a) if a.len() >= 2 && a.iter().all(|b| matches!(b, Value::Object(o) if !o.keys().any(|k| OPERATORS.contains(&k.as_str())))));
        let alternatives: Vec<Conj<'p>> = if is_or {
            v.as_array()
                .unwrap()
                .iter()
                .flat_map(|b| dnf(b.as_object().unwrap(), prefix))
                .collect()
        } else {
            let p = match prefix {
                None => k.clone(),
                Some(prefix) => format!("{prefix}.{k}"),
            };
            match v {
                Value::Object(o) => dnf(o, Some(&p)),
                Value::Array(a) => vec![vec![(p, a.as_slice())]],
                _ => panic!("invalid pattern"),
            }
        };
        out = out
            .iter()
            .flat_map(|base| {
                alternatives.iter().map(move |alt| {
                    let mut c = base.clone();
                    c.extend(alt.iter().cloned());
                    c
                })
            })
            .collect();
    }
    out
}

fn big_int(n: &serde_json::Number) -> Option<String> {
    let big = n.as_u64().is_some_and(|u| u >= 1_000_000_000_000_000)
        || n.as_i64().is_some_and(|i| i <= -1_000_000_000_000_000);
    big.then(|| n.to_string())
}

fn num_eq(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (big_int(a), big_int(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.as_f64() == b.as_f64(),
        _ => false,
    }
}

fn fold(s: &str) -> String {
    s.chars()
        .flat_map(|c| c.to_uppercase())
        .flat_map(|c| c.to_lowercase())
        .collect()
}

/// Backtracking glob: `*` matches any run; `\*` and `\\` are literals.
fn glob(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|i| glob(&p[1..], &s[i..])),
        Some('\\') => !s.is_empty() && s[0] == p[1] && glob(&p[2..], &s[1..]),
        Some(c) => !s.is_empty() && s[0] == *c && glob(&p[1..], &s[1..]),
    }
}

fn wildcard(p: &str, s: &str) -> bool {
    let p: Vec<char> = p.chars().collect();
    let s: Vec<char> = s.chars().collect();
    glob(&p, &s)
}

fn ip(s: &str) -> Option<(bool, u128)> {
    match s.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(a) => Some((false, u32::from(a) as u128)),
        std::net::IpAddr::V6(a) => Some((true, u128::from(a))),
    }
}

fn cidr(net: &str, s: &str) -> bool {
    let (addr, bits) = net.split_once('/').unwrap();
    let (v6, n) = ip(addr).unwrap();
    let bits: u32 = bits.parse().unwrap();
    let Some((v6s, x)) = ip(s) else { return false };
    if v6 != v6s {
        return false;
    }
    let width = if v6 { 128 } else { 32 };
    let shift = width - bits;
    // `/0` shifts by the full width: everything in the family matches.
    n.checked_shr(shift).unwrap_or(0) == x.checked_shr(shift).unwrap_or(0)
}

fn numeric(args: &[Value], x: f64) -> bool {
    args.chunks(2).all(|pair| {
        let n = pair[1].as_f64().unwrap();
        match pair[0].as_str().unwrap() {
            "=" => x == n,
            "<" => x < n,
            "<=" => x <= n,
            ">" => x > n,
            ">=" => x >= n,
            op => panic!("{op}"),
        }
    })
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
        _ => panic!("expected strings"),
    }
}

/// Whether one pattern condition (an element of a pattern array) holds for
/// a leaf. `exists` is handled by the caller.
fn cond(c: &Value, leaf: &Value) -> bool {
    match c {
        Value::Object(op) => {
            let (name, arg) = op.iter().next().unwrap();
            let s = leaf.as_str();
            match name.as_str() {
                "prefix" | "suffix" => {
                    let Some(s) = s else { return false };
                    let (text, s) = match arg {
                        Value::String(t) => (t.clone(), s.to_owned()),
                        _ => (fold(arg["equals-ignore-case"].as_str().unwrap()), fold(s)),
                    };
                    if name == "prefix" {
                        s.as_bytes().starts_with(text.as_bytes())
                    } else {
                        s.as_bytes().ends_with(text.as_bytes())
                    }
                }
                "equals-ignore-case" => s.is_some_and(|s| fold(s) == fold(arg.as_str().unwrap())),
                "wildcard" => s.is_some_and(|s| wildcard(arg.as_str().unwrap(), s)),
                "cidr" => s.is_some_and(|s| cidr(arg.as_str().unwrap(), s)),
                "numeric" => leaf
                    .as_f64()
                    .is_some_and(|x| numeric(arg.as_array().unwrap(), x)),
                "exists" => arg == &Value::Bool(true),
                "anything-but" => !match arg {
                    Value::Array(items) => items.iter().any(|i| cond(i, leaf)),
                    Value::Object(inner) => {
                        let (op, operand) = inner.iter().next().unwrap();
                        strings(operand).into_iter().any(|t| {
                            let mut o = Map::new();
                            o.insert(op.clone(), Value::String(t.to_owned()));
                            cond(&Value::Object(o), leaf)
                        })
                    }
                    scalar => cond(scalar, leaf),
                },
                other => panic!("unknown operator {other}"),
            }
        }
        Value::Number(a) => matches!(leaf, Value::Number(b) if num_eq(a, b)),
        other => other == leaf,
    }
}

fn compatible(a: &Leaf<'_>, b: &Leaf<'_>) -> bool {
    for (x, y) in a.trail.iter().zip(&b.trail) {
        if x.0 != y.0 {
            return true;
        }
        if x.1 != y.1 {
            return false;
        }
    }
    true
}

fn search<'a>(choices: &[Vec<&'a Leaf<'a>>], chosen: &mut Vec<&'a Leaf<'a>>) -> bool {
    let Some((first, rest)) = choices.split_first() else {
        return true;
    };
    for &leaf in first {
        if chosen.iter().all(|c| compatible(c, leaf)) {
            chosen.push(leaf);
            if search(rest, chosen) {
                return true;
            }
            chosen.pop();
        }
    }
    false
}

/// Whether `pattern` (assumed valid) matches `event`.
pub fn matches(pattern: &Value, event: &Value) -> bool {
    if !event.is_object() {
        return false;
    }
    let mut leaves = Vec::new();
    flatten(event, None, &mut Vec::new(), &mut 0, &mut leaves);
    'branch: for conj in dnf(pattern.as_object().unwrap(), None) {
        let mut choices = Vec::new();
        for (path, conds) in &conj {
            let here: Vec<&Leaf<'_>> = leaves.iter().filter(|l| &l.path == path).collect();
            let absent_ok = conds
                .iter()
                .any(|c| c.get("exists") == Some(&Value::Bool(false)));
            let hits: Vec<&Leaf<'_>> = here
                .iter()
                .copied()
                .filter(|l| conds.iter().any(|c| cond(c, l.value)))
                .collect();
            if hits.is_empty() {
                if absent_ok && here.is_empty() {
                    continue;
                }
                continue 'branch;
            }
            choices.push(hits);
        }
        if search(&choices, &mut Vec::new()) {
            return true;
        }
    }
    false
}
