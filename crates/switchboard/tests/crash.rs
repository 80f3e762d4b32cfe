//! Crash test (DESIGN.md invariant 1): nothing acknowledged is lost.
//!
//! Clients send unique signed events concurrently and record every acknowledged id; the server
//! is SIGKILLed at random moments and restarted several times; at the end every acknowledged
//! event must be in the file target at least once. Duplicates (delivered, killed before the
//! queue entry was removed, delivered again) are allowed by at-least-once and reported.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "crash-secret";
const ROUNDS: usize = 6;
const CLIENTS: usize = 8;

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("switchboard.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{data}"

[[sources]]
name = "genesys"
path = "/webhooks/genesys"
auth = {{ scheme = "hub-signature-256", secrets = ["{SECRET}"] }}

[[targets]]
name = "out"
type = "file"
path = "events.jsonl"

[[rules]]
name = "all"
[[rules.targets]]
id = "out"
arn = "out"
"#,
        data = dir.join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the server and returns it with its bound address (read from its stdout).
fn spawn(cfg: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.trim().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn body(n: usize) -> String {
    serde_json::json!({
        "topicName": "v2.users.0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f.presence",
        "version": "2",
        "eventBody": {"source": "PURECLOUD", "n": n},
        "metadata": {"CorrelationId": format!("crash-{n}")}
    })
    .to_string()
}

async fn client(addr: String, next: Arc<Mutex<usize>>, acked: Arc<Mutex<BTreeSet<String>>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    loop {
        let n = {
            let mut g = next.lock().unwrap();
            *g += 1;
            *g
        };
        let b = body(n);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let headers = switchboard_verify::sign(
            &switchboard_verify::Scheme::HubSignature256,
            SECRET,
            b.as_bytes(),
            "m",
            now,
        )
        .unwrap();
        let mut req = http
            .post(format!("http://{addr}/webhooks/genesys"))
            .header("content-type", "application/json")
            .body(b);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(resp) if resp.status().as_u16() == 202 => {
                if let Ok(v) = resp.json::<serde_json::Value>().await
                    && let Some(id) = v["id"].as_str()
                {
                    acked.lock().unwrap().insert(id.to_string());
                }
            }
            // The server died mid-request: this event was not acknowledged, so it may be lost.
            _ => return,
        }
    }
}

fn delivered_ids(data: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(data.join("events.jsonl")) {
        for line in text.lines() {
            // A kill can cut the last line short; it was never completed, so it is sent again.
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(id) = v["id"].as_str()
            {
                *counts.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    counts
}

#[test]
fn sigkill_never_loses_an_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(Mutex::new(0usize));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..ROUNDS {
        let (mut child, addr) = spawn(&cfg);
        let before = acked.lock().unwrap().len();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| rt.spawn(client(addr.clone(), next.clone(), acked.clone())))
            .collect();
        // The fault: a kill at a random instant while clients are mid-flight (not a wait for
        // anything to happen; the assertions below do not depend on how long this is).
        let wait = Duration::from_millis(150 + rand_u64() % 450);
        std::thread::sleep(wait);
        child.kill().unwrap();
        child.wait().unwrap();
        for t in tasks {
            rt.block_on(t).unwrap();
        }
        let after = acked.lock().unwrap().len();
        eprintln!(
            "round {round}: killed after {wait:?}, {} new acks",
            after - before
        );
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too few events acknowledged ({}) for the test to mean anything",
        acked.len()
    );

    // Final run: let the queue drain, then stop gracefully (SIGTERM → exit 0).
    let (mut child, _addr) = spawn(&cfg);
    let data = dir.path().join("data");
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let counts = delivered_ids(&data);
        if acked.iter().all(|id| counts.contains_key(id)) {
            break counts;
        }
        let missing = acked.iter().filter(|id| !counts.contains_key(*id)).count();
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events never delivered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");

    let dups: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "acknowledged {}, delivered {} distinct, {} duplicate deliveries",
        acked.len(),
        counts.len(),
        dups
    );
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}
