//! Ingest benchmark: N concurrent tasks calling `Store::ingest` (1 KB envelope, dedup key, one
//! delivery of the envelope each), optionally with a consumer doing `due` + `complete` at the
//! same time (the journal is its queue).
//!
//! Run: `cargo bench -p switchboard-store --bench ingest` (BENCH_SECS=n changes the length of
//! each case, default 3). Prints a markdown table. The store lives under CARGO_TARGET_TMPDIR,
//! i.e. on the same disk as target/.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchboard_store::{
    DedupClaim, NewDelivery, NewEvent, Store, StoreError, StoreOptions, StoreTuning, now_ms,
};

struct Case {
    name: &'static str,
    concurrency: usize,
    consumer: bool,
}

#[derive(Default)]
struct Outcome {
    events: u64,
    busy: u64,
    completed: u64,
    commits: u64,
    secs: f64,
    lat_us: Vec<u32>,
    backlog: u64,
    journal_bytes: u64,
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn event(task: usize, n: u64, pad: &str) -> NewEvent {
    let id = format!("{task:04}-{n:010}");
    let body = format!(r#"{{"version":"0","id":"{id}","detail":{{"pad":"{pad}"}}}}"#);
    NewEvent {
        id: id.clone(),
        source: "bench".into(),
        received_at_ms: now_ms(),
        dedup: Some(DedupClaim {
            key: format!("k-{id}"),
            ttl_ms: 86_400_000,
        }),
        identity_ttl_ms: None,
        envelope: body,
        deliveries: vec![NewDelivery {
            target: "t".into(),
            rule: "r".into(),
            payload: None,
        }],
    }
}

async fn run_case(case: &Case, secs: f64) -> Outcome {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(root).unwrap();
    let dir = tempfile::tempdir_in(root).unwrap();
    let store =
        Store::open_tuned(dir.path(), StoreOptions::default(), StoreTuning::default()).unwrap();
    // ~1 KB envelope; varied so pages do not compress/dedup in any layer.
    let pad: Arc<str> = (0..960)
        .map(|i| (b'a' + ((i * 7919) % 26) as u8) as char)
        .collect::<String>()
        .into();
    let warmup = Duration::from_millis(500);
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + Duration::from_secs_f64(secs);
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));

    let consumer = case.consumer.then(|| {
        let store = store.clone();
        let stop = stop.clone();
        let completed = completed.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let due = store.due("t", now_ms(), 512).await.unwrap();
                if due.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let n = due.len() as u64;
                store
                    .complete("t", due.into_iter().map(|d| d.id).collect())
                    .await
                    .unwrap();
                if Instant::now() >= measure_from {
                    completed.fetch_add(n, Ordering::Relaxed);
                }
            }
        })
    });

    let mut commits_at_start = None;
    let mut tasks = Vec::new();
    for task in 0..case.concurrency {
        let store = store.clone();
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let (mut events, mut busy) = (0u64, 0u64);
            for n in 0u64.. {
                let now = Instant::now();
                if now >= stop_at {
                    break;
                }
                let ev = event(task, n, &pad);
                let t0 = Instant::now();
                match store.ingest(ev).await {
                    Ok(_) => {
                        if t0 >= measure_from {
                            lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            events += 1;
                        }
                    }
                    Err(StoreError::Busy) => {
                        busy += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            (lat, events, busy)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    commits_at_start.get_or_insert(store.commit_count());
    let mut out = Outcome::default();
    for t in tasks {
        let (lat, events, busy) = t.await.unwrap();
        out.lat_us.extend(lat);
        out.events += events;
        out.busy += busy;
    }
    out.secs = measure_from.elapsed().as_secs_f64().min(secs + 0.05);
    out.commits = store.commit_count() - commits_at_start.unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    if let Some(c) = consumer {
        c.await.unwrap();
    }
    out.completed = completed.load(Ordering::Relaxed);
    out.backlog = store
        .queue_depths()
        .await
        .unwrap()
        .get("t")
        .copied()
        .unwrap_or(0);
    out.journal_bytes = std::fs::read_dir(dir.path().join("journal"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    store.close().await.unwrap();
    out.lat_us.sort_unstable();
    out
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let mut cases = Vec::new();
    for c in [1, 16, 64, 256] {
        cases.push(Case {
            name: "ingest only",
            concurrency: c,
            consumer: false,
        });
    }
    for c in [16, 64, 256] {
        cases.push(Case {
            name: "ingest + consumer",
            concurrency: c,
            consumer: true,
        });
    }
    if let Ok(filter) = std::env::var("BENCH_FILTER") {
        cases.retain(|c| c.name.contains(filter.as_str()));
    }

    if std::env::var("BENCH_NO_PROBE").is_err() {
        fsync_probe("before");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| case | conc. | events/s | ingests/commit | p50 ms | p99 ms | p99.9 ms | max ms | completes/s | backlog at end | journal at end | busy |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for case in &cases {
        let o = rt.block_on(run_case(case, secs));
        let rate = o.events as f64 / o.secs;
        let batch = if o.commits > 0 {
            o.events as f64 / o.commits as f64
        } else {
            0.0
        };
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} MB | {} |",
            case.name,
            case.concurrency,
            rate,
            batch,
            pct(&o.lat_us, 0.50),
            pct(&o.lat_us, 0.99),
            pct(&o.lat_us, 0.999),
            o.lat_us.last().copied().unwrap_or(0) as f64 / 1000.0,
            if case.consumer {
                format!("{:.0}", o.completed as f64 / o.secs)
            } else {
                "-".into()
            },
            if case.consumer {
                o.backlog.to_string()
            } else {
                "-".into()
            },
            o.journal_bytes as f64 / 1e6,
            o.busy,
        );
    }
    if std::env::var("BENCH_NO_PROBE").is_err() {
        fsync_probe("after");
    }
}

/// Noise gauge: 1 s of 32 KiB appends + fdatasync on the same disk, printed before and after
/// the cases. Other processes' writeback shows up here first.
fn fsync_probe(when: &str) {
    use std::io::Write;
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(root).unwrap();
    let dir = tempfile::tempdir_in(root).unwrap();
    let mut f = std::fs::File::create(dir.path().join("probe")).unwrap();
    let buf = vec![7u8; 32 * 1024];
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        let t0 = Instant::now();
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        lat.push(t0.elapsed().as_micros() as u32);
    }
    lat.sort_unstable();
    println!(
        "fsync probe ({when}): 32 KiB append + fdatasync: {} ops/s, p50 {:.2} ms, p99 {:.2} ms",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
}
