//! Citylots benchmark: our matcher against the `quamina` crate (0.7).
//!
//! Reads `$CITYLOTS` (default `/work/shared/data/citylots-synthetic.jlines.gz`)
//! and `$CITYLOTS_RULES` (default `/work/shared/data/citylots-rulesets.json`),
//! keeps every line in memory, and for each rule set runs one warm-up pass per
//! engine, then five timed passes each on one thread, the engines taking turns
//! (ours, quamina, ours…) so that host drift hits both. Per-rule match counts must
//! equal the table in `event-patterns.md` §4. Then measures how throughput
//! scales from 5 to 5,000 exact and prefix rules.
//!
//! Run: `cargo bench -p switchboard-pattern --bench citylots`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::time::Instant;

use serde_json::Value;
use switchboard_pattern::{Limits, Matcher, Pattern, Scratch};

/// Match counts per rule from event-patterns.md §4 (identical in all three
/// engines measured there).
const EXPECTED: &[(&str, &[u64])] = &[
    ("CL4", &[1870, 966, 1, 1]),
    ("EXACT5", &[1, 27, 743, 395, 130]),
    ("PREFIX5", &[3745, 19111, 2809, 1886, 260]),
    ("EIC5", &[1871, 1870, 10565, 1929, 0]),
    ("WILDCARD5", &[40061, 1871, 26573, 277, 1860]),
    ("ANYBUT5", &[209275, 127723, 106880, 17059, 210534]),
    ("NUMERIC5", &[165144, 133843, 10550, 213068, 19712]),
];

const PASSES: usize = 5;

struct Stats {
    best: f64,
    mean: f64,
}

fn time_passes(lines: &[Vec<u8>], mut pass: impl FnMut(&[Vec<u8>])) -> Stats {
    time_interleaved(lines, &mut [&mut pass]).remove(0)
}

/// Times the engines' passes in turns (A, B, A, B…) after one warm-up pass
/// each, so that a host whose speed drifts over seconds (this benchmark's
/// usual one) slows both alike instead of whichever ran second.
/// One timed pass of an engine over every line.
type Pass<'a> = &'a mut dyn FnMut(&[Vec<u8>]);

fn time_interleaved(lines: &[Vec<u8>], passes: &mut [Pass<'_>]) -> Vec<Stats> {
    for pass in passes.iter_mut() {
        pass(lines);
    }
    let mut rates = vec![Vec::new(); passes.len()];
    for _ in 0..PASSES {
        for (pass, rates) in passes.iter_mut().zip(&mut rates) {
            let start = Instant::now();
            pass(lines);
            rates.push(lines.len() as f64 / start.elapsed().as_secs_f64());
        }
    }
    rates
        .iter()
        .map(|r| Stats {
            best: r.iter().cloned().fold(0.0, f64::max),
            mean: r.iter().sum::<f64>() / r.len() as f64,
        })
        .collect()
}

fn build(patterns: &[String]) -> Matcher {
    let limits = Limits::default();
    let mut m = Matcher::new();
    for (i, p) in patterns.iter().enumerate() {
        let parsed = Pattern::parse(p, &limits).unwrap_or_else(|e| panic!("{p}: {e}"));
        m.add_rule(&i.to_string(), &parsed);
    }
    m
}

/// Runs our matcher over all lines; returns counts per rule index.
fn ours_counts(m: &Matcher, n: usize, lines: &[Vec<u8>], scratch: &mut Scratch) -> Vec<u64> {
    let mut counts = vec![0u64; n];
    for line in lines {
        m.for_each_match_json(line, scratch, |_, name| {
            if let Ok(i) = name.parse::<usize>() {
                counts[i] += 1;
            }
        })
        .expect("valid event");
    }
    counts
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn fmt(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    let data = std::env::var("CITYLOTS")
        .unwrap_or_else(|_| "/work/shared/data/citylots-synthetic.jlines.gz".into());
    let rules_path = std::env::var("CITYLOTS_RULES")
        .unwrap_or_else(|_| "/work/shared/data/citylots-rulesets.json".into());
    let (Ok(file), Ok(rules_text)) = (
        std::fs::File::open(&data),
        std::fs::read_to_string(&rules_path),
    ) else {
        println!("citylots benchmark skipped: {data} or {rules_path} is missing");
        return;
    };
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let lines: Vec<Vec<u8>> = reader
        .split(b'\n')
        .map(|l| l.expect("read line"))
        .filter(|l| !l.is_empty())
        .collect();
    let hwm_loaded = vm_hwm_kib();
    println!(
        "{} events, {:.0} bytes average; VmHWM after loading: {:?} KiB",
        lines.len(),
        lines.iter().map(|l| l.len()).sum::<usize>() as f64 / lines.len() as f64,
        hwm_loaded
    );
    let sets: serde_json::Map<String, Value> =
        serde_json::from_str(&rules_text).expect("rule sets");
    let only = std::env::var("CITYLOTS_ONLY").ok();

    println!(
        "\n| Rule set | Match counts | ours best / mean (events/s) | quamina best / mean (events/s) | ours/quamina (best) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (name, expected) in EXPECTED {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        let patterns: Vec<String> = sets[*name]
            .as_array()
            .expect("array")
            .iter()
            .map(|p| p.as_str().expect("string").to_owned())
            .collect();
        let m = build(&patterns);
        let mut scratch = Scratch::new();
        let counts = ours_counts(&m, patterns.len(), &lines, &mut scratch);
        assert_eq!(
            &counts[..],
            *expected,
            "{name}: our counts differ from the reference table"
        );
        let mut ours_pass = |lines: &[Vec<u8>]| {
            let mut total = 0u64;
            for line in lines {
                let _ = m.for_each_match_json(line, &mut scratch, |_, _| total += 1);
            }
            std::hint::black_box(total);
        };

        let mut q = quamina::Quamina::<usize>::new();
        let supported = std::env::var("CITYLOTS_NO_QUAMINA").is_err()
            && patterns
                .iter()
                .enumerate()
                .all(|(i, p)| q.add_pattern(i, p).is_ok());
        let (ours, theirs) = if supported {
            let mut qcounts = vec![0u64; patterns.len()];
            for line in &lines {
                for i in q.matches_for_event(line).expect("quamina event") {
                    qcounts[i] += 1;
                }
            }
            assert_eq!(&qcounts[..], *expected, "{name}: quamina counts differ");
            let mut theirs_pass = |lines: &[Vec<u8>]| {
                let mut total = 0usize;
                for line in lines {
                    total += q.matches_for_event(line).map(|v| v.len()).unwrap_or(0);
                }
                std::hint::black_box(total);
            };
            let mut stats = time_interleaved(&lines, &mut [&mut ours_pass, &mut theirs_pass]);
            let theirs = stats.pop();
            (stats.remove(0), theirs)
        } else {
            (time_passes(&lines, ours_pass), None)
        };
        let counts_text = counts
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        match theirs {
            Some(t) => println!(
                "| {name} | {counts_text} | {} / {} | {} / {} | {:.2}x |",
                fmt(ours.best),
                fmt(ours.mean),
                fmt(t.best),
                fmt(t.mean),
                ours.best / t.best
            ),
            None => println!(
                "| {name} | {counts_text} | {} / {} | unsupported | - |",
                fmt(ours.best),
                fmt(ours.mean)
            ),
        }
    }

    if std::env::var("CITYLOTS_SKIP_SCALING").is_ok() {
        return;
    }
    scaling(&lines, hwm_loaded);
}

/// Distinct values of some `properties` fields, in first-seen order.
fn field_values(lines: &[Vec<u8>], field: &str, want: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in lines.iter().step_by(7) {
        let v: Value = serde_json::from_slice(line).expect("json");
        if let Some(s) = v["properties"][field].as_str()
            && seen.insert(s.to_owned())
        {
            out.push(s.to_owned());
            if out.len() == want {
                break;
            }
        }
    }
    out
}

fn scaling(lines: &[Vec<u8>], hwm_loaded: Option<u64>) {
    let fields = [
        "MAPBLKLOT",
        "BLKLOT",
        "BLOCK_NUM",
        "LOT_NUM",
        "STREET",
        "FROM_ST",
        "TO_ST",
    ];
    let mut exact_pool = Vec::new();
    let per_field: Vec<Vec<String>> = fields
        .iter()
        .map(|f| field_values(lines, f, 1000))
        .collect();
    for i in 0..1000 {
        for (f, vals) in fields.iter().zip(&per_field) {
            if let Some(v) = vals.get(i) {
                exact_pool.push(format!(r#"{{"properties":{{"{f}":["{v}"]}}}}"#));
            }
        }
    }
    let mut prefix_pool = Vec::new();
    let mut prefix_seen = BTreeSet::new();
    for (len, (f, vals)) in
        (4..7).flat_map(|l| fields.iter().zip(&per_field).map(move |fv| (l, fv)))
    {
        for v in vals {
            let p: String = v.chars().take(len).collect();
            if prefix_seen.insert((f.to_string(), p.clone())) {
                prefix_pool.push(format!(
                    r#"{{"properties":{{"{f}":[{{"prefix":"{p}"}}]}}}}"#
                ));
            }
        }
    }
    println!(
        "\nScaling (events/s, best of {PASSES} after a warm-up; matches = total rule matches per pass):"
    );
    println!(
        "| Rules | exact: events/s | exact: matches per pass | prefix: events/s | prefix: matches per pass |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for n in [5usize, 50, 500, 5000] {
        let mut row = format!("| {n} |");
        for pool in [&exact_pool, &prefix_pool] {
            // Spread the chosen rules over the whole pool so every field is used.
            let step = (pool.len() / n).max(1);
            let chosen: Vec<String> = pool.iter().step_by(step).take(n).cloned().collect();
            assert_eq!(chosen.len(), n, "not enough distinct rules");
            let m = build(&chosen);
            let mut scratch = Scratch::new();
            let mut matches = 0u64;
            let stats = time_passes(lines, |lines| {
                matches = 0;
                for line in lines {
                    let _ = m.for_each_match_json(line, &mut scratch, |_, _| matches += 1);
                }
            });
            row.push_str(&format!(" {} | {} |", fmt(stats.best), matches));
        }
        println!("{row}");
    }
    println!(
        "VmHWM: {:?} KiB after loading the data, {:?} KiB after the 5,000-rule runs",
        hwm_loaded,
        vm_hwm_kib()
    );
}
