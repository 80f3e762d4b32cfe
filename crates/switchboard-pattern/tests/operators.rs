//! Data-driven tests of every operator and of the pitfalls listed in
//! `event-patterns.md` §2. Each case runs through the single-pattern API,
//! the many-rule matcher on bytes and on a parsed value, and the reference
//! interpreter, which must all agree with the expected answer.

mod common;

use serde_json::Value;
use switchboard_pattern::{Limits, Matcher, Pattern};

#[track_caller]
fn check(pattern: &str, event: &str, expected: bool) {
    let p = Pattern::parse(pattern, &Limits::default())
        .unwrap_or_else(|e| panic!("pattern {pattern} rejected: {e}"));
    let ev: Value = serde_json::from_str(event).unwrap();
    let pv: Value = serde_json::from_str(pattern).unwrap();
    assert_eq!(
        p.matches_json(event.as_bytes()).unwrap(),
        expected,
        "single pattern {pattern} on {event}"
    );
    assert_eq!(p.matches_value(&ev), expected, "value {pattern} on {event}");
    let mut m = Matcher::new();
    m.add_rule(
        "other",
        &Pattern::parse(r#"{"zzz":["never"]}"#, &Limits::default()).unwrap(),
    );
    m.add_rule("r", &p);
    let want: Vec<&str> = if expected { vec!["r"] } else { vec![] };
    assert_eq!(
        m.matches_json(event.as_bytes()).unwrap(),
        want,
        "matcher {pattern} on {event}"
    );
    assert_eq!(
        common::matches(&pv, &ev),
        expected,
        "reference interpreter {pattern} on {event}"
    );
}

#[test]
fn exact_values() {
    let cases: &[(&str, &str, bool)] = &[
        (r#"{"a":["x"]}"#, r#"{"a":"x"}"#, true),
        (r#"{"a":["x"]}"#, r#"{"a":"X"}"#, false),
        (r#"{"a":["x","y"]}"#, r#"{"a":"y"}"#, true),
        (r#"{"a":[true]}"#, r#"{"a":true}"#, true),
        (r#"{"a":[true]}"#, r#"{"a":"true"}"#, false),
        (r#"{"a":[null]}"#, r#"{"a":null}"#, true),
        (r#"{"a":[null]}"#, r#"{"a":"null"}"#, false),
        (r#"{"a":[null]}"#, r#"{"b":1}"#, false),
        (r#"{"a":[""]}"#, r#"{"a":""}"#, true),
        (r#"{"a":[""]}"#, r#"{"a":null}"#, false),
        (r#"{"a":[""]}"#, r#"{}"#, false),
        (r#"{"a":[300]}"#, r#"{"a":300}"#, true),
        (r#"{"a":[300]}"#, r#"{"a":300.0}"#, true),
        (r#"{"a":[300]}"#, r#"{"a":3.0e2}"#, true),
        (r#"{"a":[300]}"#, r#"{"a":"300"}"#, false),
        (r#"{"a":["300"]}"#, r#"{"a":300}"#, false),
        (r#"{"a":[0]}"#, r#"{"a":-0}"#, true),
        (
            r#"{"a":[12345678901234567890]}"#,
            r#"{"a":12345678901234567890}"#,
            true,
        ),
        (
            r#"{"a":[12345678901234567890]}"#,
            r#"{"a":12345678901234567891}"#,
            false,
        ),
        (r#"{"a":["é"]}"#, "{\"a\":\"e\u{301}\"}", false),
        (r#"{"a":["\u00e9"]}"#, r#"{"a":"é"}"#, true),
        (r#"{"a":["x\"y"]}"#, r#"{"a":"x\"y"}"#, true),
        (
            r#"{"r":["arn:aws:s3:::b/k"]}"#,
            r#"{"r":"arn:aws:s3:::b:k"}"#,
            false,
        ),
        (r#"{"a":{"b":["x"]}}"#, r#"{"a":{"b":"x","c":1}}"#, true),
        (r#"{"a":{"b":["x"]}}"#, r#"{"a":"x"}"#, false),
        (r#"{"a":["x"],"b":["y"]}"#, r#"{"a":"x"}"#, false),
        (r#"{"a":["x"],"b":["y"]}"#, r#"{"a":"x","b":"y"}"#, true),
        (r#"{}"#, r#"{"a":1}"#, true),
    ];
    for &(p, e, want) in cases {
        check(p, e, want);
    }
}

#[test]
fn arrays() {
    let cases: &[(&str, &str, bool)] = &[
        (r#"{"a":["x"]}"#, r#"{"a":["y","x"]}"#, true),
        (r#"{"a":["x","z"]}"#, r#"{"a":["y","z"]}"#, true),
        (r#"{"a":["x"]}"#, r#"{"a":[]}"#, false),
        (r#"{"a":["x"]}"#, r#"{"a":[["x"]]}"#, true),
        // Pitfall 1: anything-but on an array matches when some element is not excluded.
        (
            r#"{"a":[{"anything-but":["a"]}]}"#,
            r#"{"a":["a","b"]}"#,
            true,
        ),
        (r#"{"a":[{"anything-but":["a"]}]}"#, r#"{"a":["a"]}"#, false),
        (r#"{"a":[{"exists":true}]}"#, r#"{"a":[]}"#, false),
        (r#"{"a":[{"exists":false}]}"#, r#"{"a":[]}"#, true),
        // Pitfall 2: arrays of objects are crushed out but stay consistent.
        (
            r#"{"employees":{"firstName":["Anna"]}}"#,
            r#"{"employees":[{"firstName":"John"},{"firstName":"Anna"}]}"#,
            true,
        ),
        (
            r#"{"employees":{"firstName":["Anna"],"lastName":["Smith"]}}"#,
            r#"{"employees":[{"firstName":"Anna","lastName":"Jones"},{"firstName":"John","lastName":"Smith"}]}"#,
            false,
        ),
        (
            r#"{"employees":{"firstName":["Anna"],"lastName":["Smith"]}}"#,
            r#"{"employees":[{"firstName":"John","lastName":"Smith"},{"firstName":"Anna","lastName":"Smith"}]}"#,
            true,
        ),
        (
            r#"{"a":{"b":{"c":["1"]},"d":["2"]}}"#,
            r#"{"a":[{"b":[{"c":"1"},{"c":"0"}],"d":"2"},{"d":"3"}]}"#,
            true,
        ),
        (
            r#"{"a":{"b":{"c":["1"]},"d":["3"]}}"#,
            r#"{"a":[{"b":[{"c":"1"},{"c":"0"}],"d":"2"},{"d":"3"}]}"#,
            false,
        ),
        // Fields in different arrays combine freely.
        (
            r#"{"x":{"v":[1]},"y":{"v":[2]}}"#,
            r#"{"x":[{"v":0},{"v":1}],"y":[{"v":2},{"v":0}]}"#,
            true,
        ),
        // A top-level field combines with any array element.
        (
            r#"{"k":["z"],"a":{"b":["2"]}}"#,
            r#"{"k":"z","a":[{"b":"1"},{"b":"2"}]}"#,
            true,
        ),
    ];
    for &(p, e, want) in cases {
        check(p, e, want);
    }
}

#[test]
fn string_operators() {
    let cases: &[(&str, &str, bool)] = &[
        (r#"{"a":[{"prefix":"ab"}]}"#, r#"{"a":"abc"}"#, true),
        (r#"{"a":[{"prefix":"ab"}]}"#, r#"{"a":"ab"}"#, true),
        (r#"{"a":[{"prefix":"ab"}]}"#, r#"{"a":"xab"}"#, false),
        (r#"{"a":[{"prefix":"1"}]}"#, r#"{"a":123}"#, false),
        (r#"{"a":[{"prefix":""}]}"#, r#"{"a":""}"#, true),
        (
            r#"{"a":[{"prefix":"ab"},{"prefix":"abcd"}]}"#,
            r#"{"a":"abcde"}"#,
            true,
        ),
        (
            r#"{"a":[{"prefix":{"equals-ignore-case":"AB"}}]}"#,
            r#"{"a":"aBc"}"#,
            true,
        ),
        (
            r#"{"a":[{"prefix":{"equals-ignore-case":"AB"}}]}"#,
            r#"{"a":"xab"}"#,
            false,
        ),
        (r#"{"a":[{"suffix":".png"}]}"#, r#"{"a":"img.png"}"#, true),
        (r#"{"a":[{"suffix":".png"}]}"#, r#"{"a":"img.PNG"}"#, false),
        (
            r#"{"a":[{"suffix":{"equals-ignore-case":".png"}}]}"#,
            r#"{"a":"img.PNG"}"#,
            true,
        ),
        (
            r#"{"a":[{"equals-ignore-case":"AlIcE"}]}"#,
            r#"{"a":"alice"}"#,
            true,
        ),
        (
            r#"{"a":[{"equals-ignore-case":"AlIcE"}]}"#,
            r#"{"a":"alicex"}"#,
            false,
        ),
        (
            r#"{"a":[{"equals-ignore-case":"ÉCOLE"}]}"#,
            r#"{"a":"école"}"#,
            true,
        ),
        (
            r#"{"a":[{"equals-ignore-case":"ΣΊΣΥΦΟΣ"}]}"#,
            r#"{"a":"σίσυφοσ"}"#,
            true,
        ),
        (
            r#"{"a":[{"equals-ignore-case":"москва"}]}"#,
            r#"{"a":"МОСКВА"}"#,
            true,
        ),
        (
            r#"{"a":[{"equals-ignore-case":"straße"}]}"#,
            r#"{"a":"STRASSE"}"#,
            true,
        ),
        (r#"{"a":[{"equals-ignore-case":"1"}]}"#, r#"{"a":1}"#, false),
        (
            r#"{"a":[{"wildcard":"*.png"}]}"#,
            r#"{"a":"dir/x.png"}"#,
            true,
        ),
        (r#"{"a":[{"wildcard":"a*b*c"}]}"#, r#"{"a":"abc"}"#, true),
        (r#"{"a":[{"wildcard":"a*b*c"}]}"#, r#"{"a":"acb"}"#, false),
        (r#"{"a":[{"wildcard":"a\\*b"}]}"#, r#"{"a":"a*b"}"#, true),
        (r#"{"a":[{"wildcard":"a\\*b"}]}"#, r#"{"a":"axb"}"#, false),
        (r#"{"a":[{"wildcard":"a\\\\b"}]}"#, r#"{"a":"a\\b"}"#, true),
        (r#"{"a":[{"wildcard":"*"}]}"#, r#"{"a":""}"#, true),
        (r#"{"a":[{"wildcard":"*"}]}"#, r#"{"a":5}"#, false),
        (r#"{"a":[{"wildcard":"abc"}]}"#, r#"{"a":"abc"}"#, true),
    ];
    for &(p, e, want) in cases {
        check(p, e, want);
    }
}

#[test]
fn anything_but() {
    let cases: &[(&str, &str, bool)] = &[
        (r#"{"a":[{"anything-but":"x"}]}"#, r#"{"a":"y"}"#, true),
        (r#"{"a":[{"anything-but":"x"}]}"#, r#"{"a":"x"}"#, false),
        (r#"{"a":[{"anything-but":"x"}]}"#, r#"{"b":"y"}"#, false),
        (
            r#"{"a":[{"anything-but":["x","y"]}]}"#,
            r#"{"a":"y"}"#,
            false,
        ),
        (r#"{"a":[{"anything-but":["x","y"]}]}"#, r#"{"a":5}"#, true),
        (
            r#"{"a":[{"anything-but":["x","y"]}]}"#,
            r#"{"a":null}"#,
            true,
        ),
        (r#"{"a":[{"anything-but":5}]}"#, r#"{"a":5.0}"#, false),
        (r#"{"a":[{"anything-but":[1,2]}]}"#, r#"{"a":3}"#, true),
        (r#"{"a":[{"anything-but":[1,2]}]}"#, r#"{"a":2}"#, false),
        (r#"{"a":[{"anything-but":[1,2]}]}"#, r#"{"a":"2"}"#, true),
        (
            r#"{"a":[{"anything-but":{"prefix":"init"}}]}"#,
            r#"{"a":"initial"}"#,
            false,
        ),
        (
            r#"{"a":[{"anything-but":{"prefix":"init"}}]}"#,
            r#"{"a":"final"}"#,
            true,
        ),
        (
            r#"{"a":[{"anything-but":{"prefix":["a","b"]}}]}"#,
            r#"{"a":"bee"}"#,
            false,
        ),
        (
            r#"{"a":[{"anything-but":{"suffix":".png"}}]}"#,
            r#"{"a":"x.png"}"#,
            false,
        ),
        (
            r#"{"a":[{"anything-but":{"suffix":".png"}}]}"#,
            r#"{"a":"x.jpg"}"#,
            true,
        ),
        (
            r#"{"a":[{"anything-but":{"equals-ignore-case":["Alice","Bob"]}}]}"#,
            r#"{"a":"BOB"}"#,
            false,
        ),
        (
            r#"{"a":[{"anything-but":{"equals-ignore-case":"Alice"}}]}"#,
            r#"{"a":"Carol"}"#,
            true,
        ),
        (
            r#"{"a":[{"anything-but":{"wildcard":"*/lib/*"}}]}"#,
            r#"{"a":"/usr/lib/x"}"#,
            false,
        ),
        (
            r#"{"a":[{"anything-but":{"wildcard":["*.a","*.b"]}}]}"#,
            r#"{"a":"x.c"}"#,
            true,
        ),
        (
            r#"{"a":[{"anything-but":{"prefix":"1"}}]}"#,
            r#"{"a":1}"#,
            true,
        ),
    ];
    for &(p, e, want) in cases {
        check(p, e, want);
    }
}

#[test]
fn numeric() {
    let cases: &[(&str, &str, bool)] = &[
        (r#"{"a":[{"numeric":[">",0]}]}"#, r#"{"a":0}"#, false),
        (r#"{"a":[{"numeric":[">",0]}]}"#, r#"{"a":0.0001}"#, true),
        (r#"{"a":[{"numeric":[">=",0]}]}"#, r#"{"a":-0}"#, true),
        (r#"{"a":[{"numeric":["<",0]}]}"#, r#"{"a":-0}"#, false),
        (r#"{"a":[{"numeric":["=",300]}]}"#, r#"{"a":3e2}"#, true),
        (r#"{"a":[{"numeric":["=",5]}]}"#, r#"{"a":"5"}"#, false),
        (r#"{"a":[{"numeric":["<=",5]}]}"#, r#"{"a":5}"#, true),
        (r#"{"a":[{"numeric":["<",5]}]}"#, r#"{"a":5}"#, false),
        (r#"{"a":[{"numeric":[">",0,"<=",5]}]}"#, r#"{"a":5}"#, true),
        (r#"{"a":[{"numeric":[">",0,"<",5]}]}"#, r#"{"a":5}"#, false),
        (
            r#"{"a":[{"numeric":[">=",1e300]}]}"#,
            r#"{"a":1.5e300}"#,
            true,
        ),
        (
            r#"{"a":[{"numeric":["<",-1e300]}]}"#,
            r#"{"a":-1.7e308}"#,
            true,
        ),
        (r#"{"a":[{"numeric":[">",5]}]}"#, r#"{"a":null}"#, false),
        (r#"{"a":[{"numeric":[">",5]}]}"#, r#"{"a":true}"#, false),
        (r#"{"a":[{"numeric":[">",5]}]}"#, r#"{"a":[1,2,6]}"#, true),
        (r#"{"a":[{"numeric":[">",5]}]}"#, r#"{"a":5e0}"#, false),
        (
            r#"{"a":[{"numeric":[">",-5e9,"<",5e9]}]}"#,
            r#"{"a":4999999999.5}"#,
            true,
        ),
    ];
    for &(p, e, want) in cases {
        check(p, e, want);
    }
}

#[test]
fn exists_and_leaves() {
    let cases: &[(&str, &str, bool)] = &[
        (r#"{"a":[{"exists":true}]}"#, r#"{"a":"x"}"#, true),
        (r#"{"a":[{"exists":true}]}"#, r#"{"a":null}"#, true),
        (r#"{"a":[{"exists":false}]}"#, r#"{"a":null}"#, false),
        (r#"{"a":[{"exists":true}]}"#, r#"{"b":1}"#, false),
        (r#"{"a":[{"exists":false}]}"#, r#"{"b":1}"#, true),
        // Pitfall 3: an object-valued field is not an existing leaf.
        (r#"{"a":[{"exists":true}]}"#, r#"{"a":{"b":1}}"#, false),
        (r#"{"a":[{"exists":false}]}"#, r#"{"a":{"b":1}}"#, true),
        (r#"{"a":{"b":[{"exists":true}]}}"#, r#"{"a":{"b":1}}"#, true),
        (
            r#"{"a":[{"exists":false}],"b":["x"]}"#,
            r#"{"b":"x"}"#,
            true,
        ),
        (
            r#"{"a":[{"exists":false}],"b":["x"]}"#,
            r#"{"a":1,"b":"x"}"#,
            false,
        ),
        // event-ruler allows exists next to other values.
        (r#"{"a":[{"exists":false},"x"]}"#, r#"{"a":"x"}"#, true),
        (r#"{"a":[{"exists":false},"x"]}"#, r#"{"a":"y"}"#, false),
        (r#"{"a":[{"exists":false},"x"]}"#, r#"{}"#, true),
        (r#"{"a":[{"exists":true},"x"]}"#, r#"{"a":"y"}"#, true),
        (r#"{"a":[{"exists":true}]}"#, r#"{"a":[{"b":1}]}"#, false),
    ];
    for &(p, e, want) in cases {
        check(p, e, want);
    }
}

#[test]
fn cidr() {
    let cases: &[(&str, &str, bool)] = &[
        (
            r#"{"ip":[{"cidr":"10.0.0.0/24"}]}"#,
            r#"{"ip":"10.0.0.255"}"#,
            true,
        ),
        (
            r#"{"ip":[{"cidr":"10.0.0.0/24"}]}"#,
            r#"{"ip":"10.0.1.1"}"#,
            false,
        ),
        (
            r#"{"ip":[{"cidr":"10.0.0.0/24"}]}"#,
            r#"{"ip":"not an ip"}"#,
            false,
        ),
        (
            r#"{"ip":[{"cidr":"2001:db8::/32"}]}"#,
            r#"{"ip":"2001:db8::1"}"#,
            true,
        ),
        (
            r#"{"ip":[{"cidr":"2001:db8::/32"}]}"#,
            r#"{"ip":"2001:0db8:0000:0000:0000:0000:0000:0001"}"#,
            true,
        ),
        (
            r#"{"ip":[{"cidr":"2001:0db8:0000:0000::/64"}]}"#,
            r#"{"ip":"2001:db8::abcd"}"#,
            true,
        ),
        (
            r#"{"ip":[{"cidr":"2001:db8::/32"}]}"#,
            r#"{"ip":"10.0.0.1"}"#,
            false,
        ),
    ];
    for &(p, e, want) in cases {
        check(p, e, want);
    }
}

#[test]
fn or_and_keys() {
    let cases: &[(&str, &str, bool)] = &[
        (r#"{"$or":[{"a":["x"]},{"b":["y"]}]}"#, r#"{"b":"y"}"#, true),
        (
            r#"{"$or":[{"a":["x"]},{"b":["y"]}]}"#,
            r#"{"c":"y"}"#,
            false,
        ),
        (
            r#"{"$or":[{"a":["x"],"c":[1]},{"b":["y"]}]}"#,
            r#"{"a":"x"}"#,
            false,
        ),
        (
            r#"{"$or":[{"a":["x"],"c":[1]},{"b":["y"]}]}"#,
            r#"{"a":"x","c":1}"#,
            true,
        ),
        (
            r#"{"s":["src"],"$or":[{"a":["x"]},{"$or":[{"b":["y"]},{"c":["z"]}]}]}"#,
            r#"{"s":"src","c":"z"}"#,
            true,
        ),
        (
            r#"{"s":["src"],"$or":[{"a":["x"]},{"$or":[{"b":["y"]},{"c":["z"]}]}]}"#,
            r#"{"s":"other","c":"z"}"#,
            false,
        ),
        (
            r#"{"d":{"$or":[{"a":["x"]},{"b":["y"]}]},"$or":[{"e":[1]},{"f":[2]}]}"#,
            r#"{"d":{"b":"y"},"f":2}"#,
            true,
        ),
        (
            r#"{"d":{"$or":[{"a":["x"]},{"b":["y"]}]},"$or":[{"e":[1]},{"f":[2]}]}"#,
            r#"{"d":{"b":"y"},"g":2}"#,
            false,
        ),
        // `$or` that is not an operator is a field name.
        (r#"{"$or":["x"]}"#, r#"{"$or":"x"}"#, true),
        (
            r#"{"$or":[{"prefix":"x"},{"prefix":"y"}]}"#,
            r#"{"$or":"yes"}"#,
            true,
        ),
        // Nested and dotted keys name the same path, in pattern and event.
        (r#"{"a":{"b":[1]}}"#, r#"{"a.b":1}"#, true),
        (r#"{"a.b":[1]}"#, r#"{"a":{"b":1}}"#, true),
        (r#"{"a.b.c":[1]}"#, r#"{"a.b":{"c":1}}"#, true),
        (r#"{"a":{"b.c":[1]}}"#, r#"{"a":{"b":{"c":1}}}"#, true),
        (r#"{"a":{"":[1]}}"#, r#"{"a":{"":1}}"#, true),
        (r#"{"":[1]}"#, r#"{"":1}"#, true),
        (r#"{"a\"b":[1]}"#, r#"{"a\"b":1}"#, true),
        (r#"{"ab":[1]}"#, r#"{"a\u0062":1}"#, true),
    ];
    for &(p, e, want) in cases {
        check(p, e, want);
    }
}

#[test]
fn genesys_events() {
    let eb = include_str!("data/eventbridge-detail-customer-start.json");
    let queue = include_str!("data/queue-conversation-call.json");
    let cases: &[(&str, &str, bool)] = &[
        (
            r#"{"source":[{"prefix":"aws.partner/genesys.com"}],"detail-type":[{"wildcard":"v2.detail.events.conversation.*.customer.start"}],"detail":{"eventBody":{"mediaType":["VOICE"],"direction":["INBOUND"]}}}"#,
            eb,
            true,
        ),
        (
            r#"{"detail":{"eventBody":{"mediaType":[{"anything-but":["VOICE"]}]}}}"#,
            eb,
            false,
        ),
        (
            r#"{"detail":{"eventBody":{"eventTime":[{"numeric":[">",1700000000000]}],"ani":[{"prefix":"tel:+1555"}]}}}"#,
            eb,
            true,
        ),
        (
            r#"{"detail.eventBody.provider":[{"equals-ignore-case":"edge"}]}"#,
            eb,
            true,
        ),
        (r#"{"resources":[{"exists":true}]}"#, eb, false),
        (r#"{"resources":[{"exists":false}]}"#, eb, true),
        (
            r#"{"eventBody":{"participants":{"purpose":["agent"],"state":["connected"]}}}"#,
            queue,
            true,
        ),
        (
            r#"{"eventBody":{"participants":{"purpose":["customer"],"name":["Support"]}}}"#,
            queue,
            false,
        ),
        (
            r#"{"eventBody":{"divisions":{"entities":{"id":[{"suffix":"a8b9"}]}}}}"#,
            queue,
            true,
        ),
    ];
    for &(p, e, want) in cases {
        check(p, e, want);
    }
}

#[test]
fn matcher_lifecycle() {
    let parse = |p: &str| Pattern::parse(p, &Limits::default()).unwrap();
    let mut m = Matcher::new();
    m.add_rule("b", &parse(r#"{"a":["x"]}"#));
    m.add_rule("a", &parse(r#"{"a":[{"prefix":"x"}]}"#));
    m.add_rule("c", &parse(r#"{"a.b":["x"]}"#));
    assert_eq!(m.matches_json(br#"{"a":"x"}"#).unwrap(), vec!["b", "a"]);
    // Replacing keeps one rule under the name and moves it to the end.
    m.add_rule("b", &parse(r#"{"a":["y"]}"#));
    assert_eq!(m.len(), 3);
    assert_eq!(m.matches_json(br#"{"a":"x"}"#).unwrap(), vec!["a"]);
    assert_eq!(m.matches_json(br#"{"a":"y"}"#).unwrap(), vec!["b"]);
    m.add_rule("b", &parse(r#"{"a":[{"prefix":""}]}"#));
    assert_eq!(m.matches_json(br#"{"a":"xy"}"#).unwrap(), vec!["a", "b"]);
    assert!(m.remove_rule("a"));
    assert!(!m.remove_rule("a"));
    assert_eq!(m.matches_json(br#"{"a":"xy"}"#).unwrap(), vec!["b"]);
    assert_eq!(m.matches_json(br#"{"a":{"b":"x"}}"#).unwrap(), vec!["c"]);
    assert!(m.remove_rule("c"));
    assert!(m.remove_rule("b"));
    assert!(m.is_empty());
    assert_eq!(
        m.matches_json(br#"{"a":{"b":"x"}}"#).unwrap(),
        Vec::<&str>::new()
    );
    // Re-adding after everything was removed reuses freed ids correctly.
    m.add_rule("d", &parse(r#"{"a":{"b":["x"]}}"#));
    assert_eq!(m.matches_json(br#"{"a.b":"x"}"#).unwrap(), vec!["d"]);
    // Rules with only exists:false match events without the field.
    m.add_rule("e", &parse(r#"{"z":[{"exists":false}]}"#));
    assert_eq!(m.matches_json(br#"{"a.b":"x"}"#).unwrap(), vec!["d", "e"]);
    assert_eq!(m.matches_json(br#"{"z":1}"#).unwrap(), Vec::<&str>::new());
}

#[test]
fn invalid_events() {
    let m = {
        let mut m = Matcher::new();
        m.add_rule(
            "r",
            &Pattern::parse(r#"{"a":[1]}"#, &Limits::default()).unwrap(),
        );
        m
    };
    for bad in [
        &b"[1]"[..],
        b"1",
        b"\"x\"",
        b"",
        b"{",
        b"{\"a\":}",
        b"{\"a\":1,}",
        b"{\"a\":1} x",
        b"{\"a\":tru}",
        b"{\"a\":\"\\q\"}",
        // A key a rule mentions follows the broken array, so it is walked.
        b"{\"b\":[1,2,\"a\":1}",
        b"{\"a\":01}",
    ] {
        assert!(
            m.matches_json(bad).is_err(),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        m.matches_json(b"[1]").unwrap_err(),
        switchboard_pattern::EventError::NotAnObject
    );
    assert!(m.matches_value(&serde_json::json!([1])).is_empty());
}

#[test]
fn the_walk_stops_only_where_no_key_ahead_can_matter() {
    let mut m = Matcher::new();
    m.add_rule(
        "r",
        &Pattern::parse(r#"{"a":{"x":[1]}}"#, &Limits::default()).unwrap(),
    );
    let matched = |event: &str| m.matches_json(event.as_bytes()).unwrap() == vec!["r"];
    // Each key that reaches a.x sits after a skipped container, so each
    // would be lost by a walk that stopped there.
    assert!(matched(r#"{"b":[0],"a":{"x":1}}"#));
    assert!(matched(r#"{"a":{"x":0},"b":{"c":[2]},"a":{"x":1}}"#)); // duplicate key
    assert!(matched(r#"{"b":{"a":2},"a.x":1}"#)); // dotted key
    assert!(matched(r#"{"a":{"b":[0],"x.y":0,"x":1}}"#)); // dotted spelling of a sibling
    assert!(matched(r#"{"b":[0],"a":{"x":1}}"#)); // escaped key
    assert!(matched(r#"{"a":{"q":{"r":[]},"x":1}}"#));
    // Under an array, later elements may be bare values, announced by no key
    // (the second rule makes the walk enter the array's objects).
    let mut arr = Matcher::new();
    for (name, p) in [("r", r#"{"a":[1]}"#), ("s", r#"{"a":{"b":[2]}}"#)] {
        arr.add_rule(name, &Pattern::parse(p, &Limits::default()).unwrap());
    }
    assert_eq!(
        arr.matches_json(br#"{"a":[{"c":[0]},1]}"#).unwrap(),
        vec!["r"]
    );
    // A segment stays known while any rule still uses it.
    let mut shared = Matcher::new();
    for (name, p) in [
        ("x", r#"{"a":{"x":[1]}}"#),
        ("y", r#"{"a":{"y":[2]}}"#),
        ("x2", r#"{"a":{"x":[3]}}"#),
    ] {
        shared.add_rule(name, &Pattern::parse(p, &Limits::default()).unwrap());
    }
    assert!(shared.remove_rule("y"));
    assert!(shared.remove_rule("x2"));
    assert_eq!(
        shared
            .matches_json(br#"{"b":[0],"a":{"q":[0],"x":1}}"#)
            .unwrap(),
        vec!["x"]
    );
    // Nothing ahead can matter: the rest is not read, so not checked either.
    assert!(!matched(r#"{"a":{"x":0},"b":[1,2}"#));
    assert!(matched(
        r#"{"a":{"x":1},"geometry":{"coordinates":[[1,2],[3"#
    ));
}

#[test]
fn types_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Matcher>();
    assert_send_sync::<Pattern>();
    assert_send_sync::<switchboard_pattern::TargetInput>();
}

#[test]
fn oversized_or_fails_fast() {
    // 40 alternatives of 40 combinations each would be 1,600 > 1,000.
    let inner: Vec<String> = (0..40).map(|i| format!(r#"{{"b":[{i}]}}"#)).collect();
    let inner = format!(r#"{{"x":{{"$or":[{}]}}}}"#, inner.join(","));
    let outer: Vec<String> = (0..40).map(|_| inner.clone()).collect();
    let text = format!(r#"{{"$or":[{}]}}"#, outer.join(","));
    let limits = Limits {
        max_pattern_chars: usize::MAX,
        ..Limits::default()
    };
    // The size ceiling (4096) trips first on the full text...
    assert!(Pattern::parse(&text, &limits).is_err());
    // ...and the combination limit on the parsed value.
    let value: Value = serde_json::from_str(&text).unwrap();
    let err = Pattern::from_value(&value, &limits).unwrap_err();
    assert_eq!(
        err.kind(),
        switchboard_pattern::PatternErrorKind::TooManyCombinations
    );
}

/// Found by the `pattern_parse` fuzz target: a key with ~200 dots took 10 s
/// to add, because every dotted spelling of the path got its own edge.
#[test]
fn long_dotted_keys_are_cheap() {
    let key = "a.".repeat(300) + "z";
    let pattern = format!(r#"{{"{key}":["v"]}}"#);
    let limits = Limits {
        max_pattern_chars: 4096,
        ..Limits::default()
    };
    let p = Pattern::parse(&pattern, &limits).unwrap();
    let start = std::time::Instant::now();
    let mut m = Matcher::new();
    m.add_rule("r", &p);
    let event = format!(r#"{{"{key}":"v"}}"#);
    assert_eq!(m.matches_json(event.as_bytes()).unwrap(), vec!["r"]);
    let nested = "{\"a\":".repeat(300) + "{\"z\":\"v\"}" + &"}".repeat(300);
    assert_eq!(m.matches_json(nested.as_bytes()).unwrap(), vec!["r"]);
    assert!(m.remove_rule("r"));
    // Generous bound for debug builds on a shared machine; it took 10 s before.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// Found by the `pattern_match` fuzz target: nested empty keys were joined
/// into the path "" instead of ".", so `{"":{"":[1]}}` never matched.
#[test]
fn nested_empty_keys() {
    check(r#"{"":{"":[1]}}"#, r#"{"":{"":1}}"#, true);
    check(r#"{"":{"":[1]}}"#, r#"{"":1}"#, false);
    check(r#"{".":[1]}"#, r#"{"":{"":1}}"#, true);
    check(r#"{"":[1]}"#, r#"{"":{"":1}}"#, false);
}

/// Found by the `pattern_match` fuzz target (a reference-interpreter bug:
/// it shifted a u128 by 128 for `/0`); the engine was right.
#[test]
fn cidr_zero_prefix_matches_the_whole_family() {
    check(
        r#"{"ip":[{"cidr":"2001:db8::/00"}]}"#,
        r#"{"ip":"2001:0db8::1"}"#,
        true,
    );
    check(
        r#"{"ip":[{"cidr":"0.0.0.0/0"}]}"#,
        r#"{"ip":"192.0.2.1"}"#,
        true,
    );
    check(r#"{"ip":[{"cidr":"0.0.0.0/0"}]}"#, r#"{"ip":"::1"}"#, false);
}
