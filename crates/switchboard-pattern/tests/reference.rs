//! Property test: the compiled many-rule matcher agrees with the reference
//! interpreter in `common/mod.rs` on random patterns and events.

mod common;

use proptest::prelude::*;
use serde_json::{Value, json};
use switchboard_pattern::{Limits, Matcher, Pattern};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "x",
            "xy",
            "Xy",
            "yx",
            "",
            "X",
            "10.0.0.1",
            "10.1.0.1",
            "2001:db8::1",
            "a*b",
            "ß",
            "SS",
        ])
        .prop_map(|s| json!(s)),
        prop::sample::select(vec![
            json!(0),
            json!(1),
            json!(1.0),
            json!(-0.0),
            json!(2.5),
            json!(-3),
            json!(300),
            json!(1_000_000_000_000_000u64),
            json!(1e15),
        ]),
        Just(json!(true)),
        Just(json!(false)),
        Just(Value::Null),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "a.b", ""]).prop_map(str::to_owned)
}

/// Event keys: the pattern keys and two no pattern uses, so that events hold
/// subtrees the matcher skips, and ends its walk at when nothing after them
/// can matter.
fn event_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "a.b", "", "d", "ee"]).prop_map(str::to_owned)
}

fn event_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((event_key(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn event() -> impl Strategy<Value = Value> {
    prop::collection::vec((event_key(), event_value()), 0..5)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()))
}

fn text() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["x", "X", "y", "", "xy", "10", "ss", "ß"]).prop_map(str::to_owned)
}

fn number() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!(0),
        json!(1),
        json!(2.5),
        json!(-3),
        json!(300.0),
        json!(1e15),
    ])
}

fn condition() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => leaf(),
        1 => text().prop_map(|t| json!({"prefix": t})),
        1 => text().prop_map(|t| json!({"suffix": t})),
        1 => text().prop_map(|t| json!({"prefix": {"equals-ignore-case": t}})),
        1 => text().prop_map(|t| json!({"suffix": {"equals-ignore-case": t}})),
        1 => text().prop_map(|t| json!({"equals-ignore-case": t})),
        1 => prop::sample::select(vec!["x*", "*y", "*", "x*y", "a\\*b", "*x*", "10.*"])
            .prop_map(|w| json!({"wildcard": w})),
        1 => prop::collection::vec(text(), 1..3).prop_map(|t| json!({"anything-but": t})),
        1 => number().prop_map(|n| json!({"anything-but": n})),
        1 => prop::collection::vec(number(), 1..3).prop_map(|n| json!({"anything-but": n})),
        1 => text().prop_map(|t| json!({"anything-but": {"prefix": t}})),
        1 => prop::collection::vec(text(), 1..3).prop_map(|t| json!({"anything-but": {"suffix": t}})),
        1 => text().prop_map(|t| json!({"anything-but": {"equals-ignore-case": t}})),
        1 => prop::sample::select(vec!["x*", "*y"]).prop_map(|w| json!({"anything-but": {"wildcard": w}})),
        1 => (prop::sample::select(vec!["<", "<=", ">", ">=", "="]), number())
            .prop_map(|(op, n)| json!({"numeric": [op, n]})),
        1 => (number(), number()).prop_map(|(a, b)| json!({"numeric": [">=", a, "<", b]})),
        1 => any::<bool>().prop_map(|b| json!({"exists": b})),
        1 => prop::sample::select(vec!["10.0.0.0/8", "10.0.0.0/16", "2001:db8::/32", "0.0.0.0/0", "::/0"])
            .prop_map(|c| json!({"cidr": c})),
    ]
}

fn pattern_object(depth: u32) -> BoxedStrategy<Value> {
    let field = if depth == 0 {
        prop::collection::vec(condition(), 1..4)
            .prop_map(Value::Array)
            .boxed()
    } else {
        prop_oneof![
            3 => prop::collection::vec(condition(), 1..4).prop_map(Value::Array),
            1 => pattern_object(depth - 1),
        ]
        .boxed()
    };
    let fields = prop::collection::vec((key(), field), 1..3);
    let or = if depth == 0 {
        Just(None).boxed()
    } else {
        prop_oneof![
            3 => Just(None),
            1 => prop::collection::vec(pattern_object(depth - 1), 2..4).prop_map(Some),
        ]
        .boxed()
    };
    (fields, or)
        .prop_map(|(fields, or)| {
            let mut m: serde_json::Map<String, Value> = fields.into_iter().collect();
            if let Some(branches) = or {
                m.insert("$or".into(), Value::Array(branches));
            }
            Value::Object(m)
        })
        .boxed()
}

/// Adds every valid pattern to one matcher and compares its answers with the
/// reference interpreter, before and after removing a rule.
fn agrees(patterns: &[Value], events: &[Value]) -> Result<(), TestCaseError> {
    let mut m = Matcher::new();
    let mut valid = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        // Random ranges can be empty (lo >= hi); those are rightly rejected.
        if let Ok(parsed) = Pattern::from_value(p, &Limits::default()) {
            m.add_rule(&i.to_string(), &parsed);
            valid.push((i.to_string(), p));
        }
    }
    for phase in 0..2 {
        if phase == 1 && !valid.is_empty() {
            // Removing a rule must not disturb the others.
            let (name, _) = valid.remove(0);
            prop_assert!(m.remove_rule(&name));
        }
        for ev in events {
            let want: Vec<&str> = valid
                .iter()
                .filter(|(_, p)| common::matches(p, ev))
                .map(|(n, _)| n.as_str())
                .collect();
            prop_assert_eq!(&m.matches_value(ev), &want, "value path, event {}", ev);
            let bytes = serde_json::to_vec(ev).unwrap();
            prop_assert_eq!(
                &m.matches_json(&bytes).unwrap(),
                &want,
                "bytes path, event {}",
                ev
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn matcher_agrees_with_reference(
        patterns in prop::collection::vec(pattern_object(2), 1..6),
        events in prop::collection::vec(event(), 1..4),
    ) {
        agrees(&patterns, &events)?;
    }
}

/// Strings of 0 to 12 bytes (short and long index keys), some sharing
/// prefixes, suffixes or a case folding.
const MANY_TEXTS: [&str; 16] = [
    "",
    "x",
    "X",
    "xy",
    "10",
    "ss",
    "ß",
    "abcdefg",
    "abcdefgh",
    "ABCDEFGH",
    "abcdefghi",
    "abcdefghijkl",
    "ghijkl",
    "Straße",
    "STRASSE",
    "xyz12345",
];

fn many_text() -> impl Strategy<Value = String> {
    (
        prop::sample::select(MANY_TEXTS.to_vec()),
        prop::sample::select(MANY_TEXTS.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(a, b, join)| {
            if join {
                format!("{a}{b}")
            } else {
                a.to_owned()
            }
        })
}

fn string_condition() -> impl Strategy<Value = Value> {
    prop_oneof![
        many_text().prop_map(|t| json!(t)),
        many_text().prop_map(|t| json!({"prefix": t})),
        many_text().prop_map(|t| json!({"suffix": t})),
        many_text().prop_map(|t| json!({"prefix": {"equals-ignore-case": t}})),
        many_text().prop_map(|t| json!({"suffix": {"equals-ignore-case": t}})),
        many_text().prop_map(|t| json!({"equals-ignore-case": t})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Many string rules on few fields: each field gets more operands of a
    /// kind than the linear-scan limit (8), so the hashed and filtered
    /// indexes are compared with the reference too.
    #[test]
    fn many_rules_agree_with_reference(
        rules in prop::collection::vec(
            (prop::sample::select(vec!["a", "b", "a.b"]), prop::collection::vec(string_condition(), 1..3)),
            20..80,
        ),
        events in prop::collection::vec(
            prop::collection::vec((prop::sample::select(vec!["a", "b"]), many_text()), 1..3),
            1..6,
        ),
    ) {
        let patterns: Vec<Value> = rules.into_iter().map(|(k, c)| json!({ k: c })).collect();
        let events: Vec<Value> = events
            .into_iter()
            .map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect()))
            .collect();
        agrees(&patterns, &events)?;
    }
}
