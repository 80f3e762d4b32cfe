//! The binary end to end: zero-config `serve`, `send`, `dlq`, `config check`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

struct Server {
    child: Child,
    addr: String,
    secret: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts zero-config `serve` in `dir` (as the working directory, so `./switchboard-data` is there).
fn serve_zero_config(dir: &std::path::Path) -> Server {
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("SWITCHBOARD_WEBHOOK_SECRET")
        .env_remove("SWITCHBOARD_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut secret = None;
    let mut send_cmd = None;
    let addr = loop {
        let line = lines.next().expect("serve exited early").unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.trim().to_string();
        }
        if line.trim_start().starts_with("switchboard send") {
            send_cmd = Some(line.clone());
        } else if line.starts_with("  ") && secret.is_none() {
            secret = Some(line.trim().to_string());
        }
    };
    std::thread::spawn(move || for _ in lines {});
    if let (Some(s), Some(cmd)) = (&secret, &send_cmd) {
        assert!(
            cmd.contains(s),
            "the printed send command carries the secret: {cmd}"
        );
        assert!(
            cmd.contains(&addr),
            "the printed send command targets the server: {cmd}"
        );
    }
    Server {
        child,
        addr,
        secret,
    }
}

#[test]
fn zero_config_serve_send_and_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_zero_config(dir.path());
    let secret = server
        .secret
        .clone()
        .expect("first start prints the generated secret");
    let stored =
        std::fs::read_to_string(dir.path().join("switchboard-data/webhook-secret")).unwrap();
    assert_eq!(stored.trim(), secret);

    let url = format!("http://{}/webhooks/genesys", server.addr);
    let out = bin()
        .args(["send", "--url", &url, &format!("--secret={secret}")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "send failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(": 202 ")).count(),
        9,
        "{stdout}"
    );

    // The same events again are duplicates.
    let out = bin()
        .args(["send", "--url", &url, &format!("--secret={secret}")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains(": 200 ") && l.contains("\"duplicate\":true"))
            .count(),
        9,
        "{stdout}"
    );

    // A wrong secret is refused and `send` says so with a failing exit code.
    let out = bin()
        .args(["send", "--url", &url, "--secret", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(": 401 "));

    // The admin API answers on loopback without a token.
    let out = bin()
        .args(["dlq", "list", "--url", &format!("http://{}", server.addr)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["items"], serde_json::json!([]));

    // All nine envelopes land in events.jsonl (the zero-config catch-all rule).
    let file = dir.path().join("switchboard-data/events.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = std::fs::read_to_string(&file)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n == 9 {
            break;
        }
        assert!(n < 9, "more lines than events: {n}");
        assert!(
            std::time::Instant::now() < deadline,
            "only {n} lines in events.jsonl"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn config_check_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[[targets]]\nname = \"out\"\ntype = \"stdout\"\n").unwrap();
    let out = bin().args(["config", "check"]).arg(&good).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[targets]]\nname = \"out\"\ntype = \"stdout\"\n\n[[rules]]\nname = \"r\"\nevent_pattern = '{\"source\": [{\"prefix\": 5}]}'\n",
    )
    .unwrap();
    let out = bin().args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:5:"), "{err}");
    assert!(err.contains("rules[0].event_pattern"), "{err}");
    assert!(err.contains("InvalidEventPatternException"), "{err}");

    let out = bin()
        .args(["config", "check", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn simulate_open_loop_against_serve_and_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_zero_config(dir.path());
    let secret = server.secret.clone().unwrap();
    let url = format!("http://{}/webhooks/genesys", server.addr);
    let out = bin()
        .args([
            "simulate",
            "--url",
            &url,
            &format!("--secret={secret}"),
            "--events",
            "200",
            "--rate",
            "1000",
            "--duplicates",
            "0.1",
            // Fewer connections than the rate keeps busy: requests wait for one, none is lost.
            "--connections",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sent"], 200);
    assert_eq!(report["errors"], 0);
    // Every tenth event is sent twice: those answers are duplicates, the rest new.
    let dups = report["duplicates"].as_u64().unwrap();
    assert!((15..=20).contains(&dups), "{report}");
    assert_eq!(report["acked"].as_u64().unwrap() + dups, 200);
    assert!(report["ack_latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    let out = bin()
        .args([
            "simulate",
            "--url",
            &url,
            "--secret=s",
            "--connections",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--connections"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let file = dir.path().join("corpus.jsonl");
    let out = bin()
        .args(["simulate", "--secret", "s", "--events", "30", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30);
    assert!(
        lines[0]["headers"]["x-hub-signature-256"]
            .as_str()
            .unwrap()
            .starts_with("sha256=")
    );
    let first: serde_json::Value =
        serde_json::from_str(lines[0]["body"].as_str().unwrap()).unwrap();
    assert!(
        first["topicName"]
            .as_str()
            .unwrap()
            .ends_with(".customer.start")
    );
}

#[test]
fn dlq_list_show_redrive_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    // A target on a port that refuses connections, no retries: every event dead-letters at
    // once. The socket stays bound (never listening) for the whole test, so no other test's
    // server can be given the port and answer in its place.
    let dead = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    dead.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let dead_port = dead.local_addr().unwrap().as_socket().unwrap().port();
    let cfg = dir.path().join("sb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[sources]]\nname = \"g\"\npath = \"/in\"\nauth = {{ scheme = \"hub-signature-256\", secrets = [\"s3\"] }}\n[[targets]]\nname = \"down\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{dead_port}/x\"\n[[rules]]\nname = \"all\"\n[[rules.targets]]\nid = \"down\"\narn = \"down\"\nretry_policy = {{ maximum_retry_attempts = 0 }}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = bin()
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve exited early").unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.trim().to_string();
        }
    };
    let server = Server {
        child,
        addr,
        secret: None,
    };
    let base = format!("http://{}", server.addr);
    let out = bin()
        .args(["send", "--url", &format!("{base}/in"), "--secret=s3"])
        .output()
        .unwrap();
    assert!(out.status.success());

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let items = loop {
        let out = bin()
            .args(["dlq", "list", "--url", &base])
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let items = v["items"].as_array().unwrap().clone();
        if items.len() == 9 {
            break items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} dead letters",
            items.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(items[0]["attributes"]["ERROR_CODE"], "CONNECTION");
    let id = items[0]["id"].as_i64().unwrap().to_string();
    let out = bin()
        .args(["dlq", "show", "--url", &base, &id])
        .output()
        .unwrap();
    let one: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one["id"].as_i64().unwrap().to_string(), id);
    let out = bin()
        .args(["dlq", "redrive", "--url", &base, "--all"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["redriven"], 9);
    let out = bin()
        .args(["dlq", "redrive", "--url", &base])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "redrive without a selection is refused"
    );
    // The 9 stored events replayed through the rules: 9 new deliveries to the target.
    let out = bin()
        .args([
            "replay",
            "--url",
            &base,
            "--from",
            "2000-01-01T00:00:00Z",
            "--to",
            "2100-01-01T00:00:00Z",
            "--target",
            "down",
            "--name",
            "cli-replay",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["events"].as_u64(), v["deliveries"].as_u64()),
        (Some(9), Some(9))
    );
    assert_eq!(v["replay_name"], "cli-replay");
    let out = bin()
        .args(["replay", "--url", &base, "--from", "x", "--to", "y"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bad time range is refused");
}
