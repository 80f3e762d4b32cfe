//! Any text: parsing never panics, errors carry the AWS exception name, and
//! an accepted pattern can be added to, matched by and removed from a matcher.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_pattern::{Limits, Matcher, Pattern};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits {
        max_pattern_chars: 4096,
        ..Limits::default()
    };
    match Pattern::parse(text, &limits) {
        Err(e) => assert!(e.to_string().starts_with("InvalidEventPatternException: ")),
        Ok(p) => {
            assert!(p.combinations() >= 1 && p.combinations() <= limits.max_or_combinations);
            let mut m = Matcher::new();
            m.add_rule("r", &p);
            m.add_rule("r", &p);
            assert_eq!(m.len(), 1);
            let _ = m.matches_json(br#"{"a":{"b":[1,"x",null,true]}}"#);
            assert!(m.remove_rule("r"));
            assert!(m.is_empty());
        }
    }
});
