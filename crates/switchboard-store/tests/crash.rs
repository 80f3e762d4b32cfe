//! Crash and fault tests.
//!
//! `crash_recovery`: SIGKILL a writer process at random moments and check that every event whose
//! `ingest` returned `Ok` (and was reported on stdout right after) is on disk after reopen, and
//! that no queued delivery vanished unless its consumer had started completing it.
//!
//! The child is this same binary, re-executed with `CHILD_ENV` set (the test uses a custom
//! `main`, `harness = false`). SIGKILL is a process crash, not a power cut: the page cache
//! survives it, so this checks the commit/ack ordering and the journal's recovery (torn tails,
//! the dedup index rebuilt from the journal), not fsync itself (see docs/storage.md, "What the
//! tests do not cover").
//!
//! `disk_fault_is_fail_stop`: a child under `ulimit -f` hits EFBIG inside the journal's write
//! path; the store must answer `Failed` from then on, and a reopen must find every acked event.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_store::{DedupClaim, IngestOutcome, NewDelivery, NewEvent, Store, StoreOptions};

const CHILD_ENV: &str = "SWITCHBOARD_STORE_CRASH_CHILD_DIR";
const ROUND_ENV: &str = "SWITCHBOARD_STORE_CRASH_ROUND";
const ROUNDS: u32 = 12;

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let round = std::env::var(ROUND_ENV).unwrap_or_default();
        child(&dir, &round);
        return;
    }
    // `cargo test -- --list` and filters: behave like a one-test harness.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        println!("crash_recovery: test");
        println!("disk_fault_is_fail_stop: test");
        return;
    }
    if let Ok(dir) = std::env::var(FAULT_ENV) {
        fault_child(&dir);
        return;
    }
    // A small subset of libtest's command line: name filters and `--skip NAME`, so that
    // `cargo test -p switchboard-store -- model` or `-- --skip crash` behave as expected.
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--skip" => skips.extend(it.next().cloned()),
            "--test-threads" | "--format" | "--color" | "-Z" | "--logfile" => {
                it.next();
            }
            _ if a.starts_with('-') => {}
            _ => filters.push(a.clone()),
        }
    }
    let wanted = |name: &str| {
        (filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
            && !skips.iter().any(|s| name.contains(s.as_str()))
    };
    if wanted("crash_recovery") {
        let started = Instant::now();
        parent();
        println!(
            "test crash_recovery ... ok ({ROUNDS} kills, {:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    if wanted("disk_fault_is_fail_stop") {
        disk_fault_is_fail_stop();
        println!("test disk_fault_is_fail_stop ... ok");
    }
}

const FAULT_ENV: &str = "SWITCHBOARD_STORE_FAULT_CHILD_DIR";

fn kind(e: &switchboard_store::StoreError) -> &'static str {
    use switchboard_store::StoreError as E;
    match e {
        E::Busy => "Busy",
        E::ShuttingDown => "ShuttingDown",
        E::Failed(_) => "Failed",
        E::Sqlite(_) => "Sqlite",
        _ => "Other",
    }
}

/// Runs under `ulimit -f` with SIGXFSZ ignored: writes past 1 MiB fail with EFBIG inside the
/// journal's write path (a real I/O error, not a hook). Ingests until that happens.
fn fault_child(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Store::open(std::path::Path::new(dir), StoreOptions::default()).unwrap();
        let mut tasks = Vec::new();
        for task in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0u64.. {
                    let id = format!("f{task}-{n}");
                    match store.ingest(new_event(&id)).await {
                        Ok(_) => println!("ACK {id}"),
                        Err(switchboard_store::StoreError::Busy) => tokio::task::yield_now().await,
                        Err(e) => {
                            println!("ERR {} {e}", kind(&e));
                            return;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        println!("HEALTHY {}", store.is_healthy());
        match store.ingest(new_event("after")).await {
            Ok(_) => println!("AFTER Ok"),
            Err(e) => println!("AFTER {}", kind(&e)),
        }
        match store.close().await {
            Ok(()) => println!("CLOSE Ok"),
            Err(e) => println!("CLOSE {}", kind(&e)),
        }
    });
}

fn disk_fault_is_fail_stop() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // `trap '' XFSZ` makes the signal ignored, which survives exec; `ulimit -f` is in 512-byte
    // blocks in POSIX sh: 2048 blocks = 1 MiB for every file the child writes.
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 2048; exec \"$0\"")
        .arg(&exe)
        .env(FAULT_ENV, dir.path())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let acked: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ACK "))
        .collect();
    let errs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ERR ")).collect();
    assert!(
        acked.len() > 50,
        "too few acks before the fault: {}",
        acked.len()
    );
    assert_eq!(errs.len(), 8, "{stdout}");
    assert!(errs.iter().all(|l| l.starts_with("ERR Failed")), "{errs:?}");
    for line in ["HEALTHY false", "AFTER Failed", "CLOSE Failed"] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in child output"
        );
    }
    eprintln!("disk fault after {} acks: {}", acked.len(), errs[0]);

    // Without the limit, a reopen recovers every acknowledged event and works again.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert!(store.is_healthy());
        let stored = all_event_ids(&store).await;
        for id in &acked {
            assert!(stored.contains(*id), "acked {id} lost");
        }
        assert_eq!(
            store.ingest(new_event("after-reopen")).await.unwrap(),
            IngestOutcome::Stored
        );
        store.close().await.unwrap();
    });
}

/// Every event id in the journal, read once (a lookup per id would scan it per id).
async fn all_event_ids(store: &Store) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let mut after = None;
    loop {
        let page = store
            .events_between(i64::MIN, i64::MAX, after, 5_000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        ids.extend(page.into_iter().map(|e| e.id));
    }
    ids
}

fn new_event(id: &str) -> NewEvent {
    NewEvent {
        id: id.to_string(),
        source: "crash".into(),
        received_at_ms: 1_000,
        dedup: Some(DedupClaim {
            key: format!("key-{id}"),
            ttl_ms: i64::MAX / 4,
        }),
        identity_ttl_ms: None,
        envelope: format!(r#"{{"id":"{id}","pad":"{}"}}"#, "x".repeat(512)),
        deliveries: vec![NewDelivery {
            target: "t".into(),
            rule: "r".into(),
            payload: Some(id.to_string()),
        }],
    }
}

/// Ingests forever from 32 tasks while a consumer completes deliveries; prints `ACK <id>`
/// after each Ok ingest and `COMPLETING <id>` before each complete.
fn child(dir: &str, round: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Store::open(std::path::Path::new(dir), StoreOptions::default()).unwrap();
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let say = {
            let out = out.clone();
            move |line: String| {
                let mut o = out.lock().unwrap();
                writeln!(o, "{line}").unwrap();
                o.flush().unwrap();
            }
        };
        let mut tasks = Vec::new();
        for task in 0..32 {
            let store = store.clone();
            let say = say.clone();
            let round = round.to_string();
            tasks.push(tokio::spawn(async move {
                for n in 0u64.. {
                    let id = format!("r{round}-t{task}-n{n}");
                    match store.ingest(new_event(&id)).await {
                        Ok(IngestOutcome::Stored) => say(format!("ACK {id}")),
                        Ok(other) => panic!("unexpected {other:?}"),
                        Err(switchboard_store::StoreError::Busy) => tokio::task::yield_now().await,
                        Err(e) => panic!("ingest failed: {e}"),
                    }
                }
            }));
        }
        let consumer = {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let due = store.due("t", i64::MAX, 64).await.unwrap();
                    if due.is_empty() {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    for d in &due {
                        say(format!("COMPLETING {}", d.event_id));
                    }
                    store
                        .complete("t", due.iter().map(|d| d.id).collect())
                        .await
                        .unwrap();
                }
            })
        };
        // Runs until killed.
        consumer.await.unwrap();
    });
}

/// Tiny xorshift: randomness without a dependency; the seed is printed for reproduction.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn parent() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<String> = Vec::new();
    let mut completing = std::collections::HashSet::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    for round in 0..ROUNDS {
        let kill_after = 1 + rng.below(3_000);
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut acks_this_round = 0u64;
        let mut killed = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        for line in BufReader::new(stdout).lines() {
            // Lines written before the kill are still in the pipe: they were acked and count.
            let line = line.unwrap();
            if let Some(id) = line.strip_prefix("ACK ") {
                acked.push(id.to_string());
                acks_this_round += 1;
            } else if let Some(id) = line.strip_prefix("COMPLETING ") {
                completing.insert(id.to_string());
            }
            if !killed && (acks_this_round >= kill_after || Instant::now() > deadline) {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(killed, "child exited on its own: {status:?}");
        // Normally `kill_after` acks were seen; on a very slow disk the 20 s deadline may have
        // fired first, which is still a kill at a random moment.
        assert!(
            acks_this_round >= 1,
            "round {round}: no ack before the kill"
        );

        // Recovery: reopen the crash image and check every acknowledged event.
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            // Everything still queued, drained by the parent (which then counts as having
            // completed it): `due` returns at most 10,000 at a time.
            let mut queued = std::collections::HashSet::new();
            loop {
                let due = store.due("t", i64::MAX, 10_000).await.unwrap();
                if due.is_empty() {
                    break;
                }
                store
                    .complete("t", due.iter().map(|d| d.id).collect())
                    .await
                    .unwrap();
                queued.extend(due.into_iter().map(|d| d.event_id));
            }
            let stored = all_event_ids(&store).await;
            for id in &acked {
                assert!(
                    stored.contains(id),
                    "round {round}: acked event {id} lost (seed {seed})"
                );
                assert!(
                    queued.contains(id) || completing.contains(id),
                    "round {round}: delivery of {id} vanished without being completed (seed {seed})"
                );
            }
            completing.extend(queued);
            // Dedup claims of acked events are durable with them.
            for id in acked.iter().rev().take(20) {
                let again = NewEvent {
                    id: format!("{id}-retry"),
                    ..new_event(id)
                };
                assert_eq!(
                    store.ingest(again).await.unwrap(),
                    IngestOutcome::Duplicate {
                        original_id: id.clone()
                    }
                );
            }
            store.close().await.unwrap();
        });
        eprintln!(
            "round {round}: killed after {acks_this_round} acks; {} acked so far, all present",
            acked.len()
        );
    }
    assert!(acked.len() as u32 >= ROUNDS);
}
