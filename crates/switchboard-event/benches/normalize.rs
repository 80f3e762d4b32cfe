//! Normalization cost per event: the general normalizer (parse into a `Value`, rebuild,
//! serialize, drop) against the text fast path, on the Genesys samples in `tests/data`.
//!
//! Run: `cargo bench -p switchboard-event --bench normalize`. Prints ns per event, best of five
//! passes of 200,000 events each, and the ratio.

use std::time::Instant;

use switchboard_event::{NormalizeContext, NormalizeOptions, normalize, normalize_text};

const EVENTS: usize = 200_000;
const PASSES: usize = 5;

fn samples() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("tests/data") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("sample");
        let v: serde_json::Value = serde_json::from_str(&text).expect("sample is JSON");
        // Compact, as Genesys sends it.
        out.push(v.to_string());
    }
    out
}

fn best_ns(bodies: &[String], mut f: impl FnMut(&str) -> usize) -> f64 {
    let mut best = f64::MAX;
    let mut sink = 0usize;
    for _ in 0..PASSES {
        let t = Instant::now();
        for i in 0..EVENTS {
            sink = sink.wrapping_add(f(&bodies[i % bodies.len()]));
        }
        best = best.min(t.elapsed().as_nanos() as f64 / EVENTS as f64);
    }
    std::hint::black_box(sink);
    best
}

fn main() {
    let bodies = samples();
    let opts = NormalizeOptions::default();
    let received_at = time::OffsetDateTime::now_utc();
    let ctx = NormalizeContext {
        new_id: "0192d4c3-7a1b-7cde-8f00-112233445566",
        delivery_id: None,
        received_at,
    };
    let fast_taken = bodies
        .iter()
        .filter(|b| normalize_text(b, &ctx, &opts).is_some())
        .count();
    let general = best_ns(&bodies, |b| {
        let v: serde_json::Value = serde_json::from_str(b).expect("JSON");
        match normalize(v, &ctx, &opts) {
            Ok(n) => serde_json::to_string(&n.envelope).map_or(0, |s| s.len()),
            Err(_) => 0,
        }
    });
    let fast = best_ns(&bodies, |b| match normalize_text(b, &ctx, &opts) {
        Some(n) => n.envelope.len(),
        None => 0,
    });
    println!(
        "{} samples ({} take the fast path), {} events per pass, best of {PASSES}",
        bodies.len(),
        fast_taken,
        EVENTS
    );
    println!("general (parse + normalize + serialize + drop): {general:8.0} ns/event");
    println!("text fast path:                                 {fast:8.0} ns/event");
    println!("ratio general / fast: {:.2}", general / fast);
}
