//! `switchboard simulate`: a Genesys org in a box.
//!
//! Plays conversation lifecycles (customer.start → acd.start → queue conversation → routing
//! status → user.start → presence → acd.end → customer.end → acw → queue conversation) for N
//! agents and queues, with the shapes of the built-in sample events and fresh ids, signs each
//! request for the chosen scheme and sends them **open loop**: at the target rate whatever the
//! latency, so a slow gateway shows up as latency and errors rather than as a politely slower
//! client (no coordinated omission). `--out FILE` writes the signed requests as JSON lines
//! instead (the corpus `bench/ingest.sh` replays with wrk).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use switchboard_verify::Scheme;

use super::send::SigningArgs;

/// Fixed ids in the sample events, replaced per conversation.
const SAMPLE_CONVERSATION: &str = "8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
const SAMPLE_QUEUE: &str = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
const SAMPLE_USER: &str = "0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f";

/// One conversation, in order.
const LIFECYCLE: &[&str] = &[
    include_str!("../../assets/events/detail-customer-start.json"),
    include_str!("../../assets/events/detail-acd-start.json"),
    include_str!("../../assets/events/queue-conversation-call.json"),
    include_str!("../../assets/events/user-routing-status.json"),
    include_str!("../../assets/events/detail-user-start.json"),
    include_str!("../../assets/events/user-presence.json"),
    include_str!("../../assets/events/detail-acd-end.json"),
    include_str!("../../assets/events/detail-customer-end.json"),
    include_str!("../../assets/events/detail-acw.json"),
    include_str!("../../assets/events/queue-conversation-call.json"),
];

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    signing: SigningArgs,
    /// Agents in the simulated org.
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// Queues in the simulated org.
    #[arg(long, default_value_t = 5)]
    queues: usize,
    /// Target rate, events per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Events to send in total.
    #[arg(long, default_value_t = 2000)]
    events: usize,
    /// Fraction of events sent a second time (exercises dedup), 0.0–1.0.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Requests in flight at most; beyond it an event counts as an error ("backlog").
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Connections at most, as a sender with a connection pool has. A request waits for a free
    /// one, and its latency counts from before that wait.
    /// The default is the gateway's `server.max_connections`: a client with more connections
    /// than the server serves waits for a serving slot, and no server histogram sees that wait.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Write the signed requests as JSON lines ({"headers": {..}, "body": "..."}) instead of sending.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Generates lifecycle events with fresh ids.
pub struct Org {
    templates: Vec<String>,
    agents: Vec<String>,
    queues: Vec<String>,
    step: usize,
    conversation: String,
    agent: usize,
    queue: usize,
    rng_state: u64,
}

impl Org {
    pub fn new(agents: usize, queues: usize) -> anyhow::Result<Self> {
        if agents == 0 || queues == 0 {
            bail!("--agents and --queues must be at least 1");
        }
        let templates = LIFECYCLE
            .iter()
            .map(|t| {
                let v: serde_json::Value = serde_json::from_str(t).context("built-in event")?;
                Ok(v.to_string())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Org {
            templates,
            agents: (0..agents)
                .map(|_| uuid::Uuid::new_v4().to_string())
                .collect(),
            queues: (0..queues)
                .map(|_| uuid::Uuid::new_v4().to_string())
                .collect(),
            step: 0,
            conversation: String::new(),
            agent: 0,
            queue: 0,
            rng_state: 0x9E37_79B9_7F4A_7C15,
        })
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift: reproducible spread over agents and queues without another dependency.
        let mut x = self.rng_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng_state = x;
        x
    }

    /// The next event of the current conversation (starting a new one when it ended).
    pub fn next_event(&mut self) -> String {
        if self.step == 0 {
            self.conversation = uuid::Uuid::new_v4().to_string();
            self.agent = (self.next_rand() % self.agents.len() as u64) as usize;
            self.queue = (self.next_rand() % self.queues.len() as u64) as usize;
        }
        let t = &self.templates[self.step];
        self.step = (self.step + 1) % self.templates.len();
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let mut v: serde_json::Value = match serde_json::from_str(
            &t.replace(SAMPLE_CONVERSATION, &self.conversation)
                .replace(SAMPLE_QUEUE, &self.queues[self.queue])
                .replace(SAMPLE_USER, &self.agents[self.agent]),
        ) {
            Ok(v) => v,
            Err(_) => return t.clone(),
        };
        if let Some(c) = v.pointer_mut("/metadata/CorrelationId") {
            *c = serde_json::Value::String(uuid::Uuid::new_v4().to_string());
        }
        if let Some(e) = v.pointer_mut("/eventBody/eventTime") {
            *e = serde_json::Value::from(now_ms as i64);
        }
        v.to_string()
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.duplicates) {
        bail!("--duplicates must be within 0.0–1.0");
    }
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--rate must be > 0");
    }
    let (secret, scheme) = args.signing.resolve()?;
    let mut org = Org::new(args.agents, args.queues)?;
    // Decide the whole plan up front: which events, which are resent.
    let mut plan: Vec<String> = Vec::with_capacity(args.events);
    let mut dup_every = if args.duplicates > 0.0 {
        (1.0 / args.duplicates).round() as usize
    } else {
        0
    };
    if dup_every == 0 && args.duplicates > 0.0 {
        dup_every = 1;
    }
    while plan.len() < args.events {
        let e = org.next_event();
        plan.push(e.clone());
        if dup_every > 0 && plan.len().is_multiple_of(dup_every) && plan.len() < args.events {
            plan.push(e);
        }
    }
    if let Some(out) = &args.out {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        );
        for (i, body) in plan.iter().enumerate() {
            let headers = sign(&scheme, &secret, body, i)?;
            let line = serde_json::json!({"headers": headers.into_iter().collect::<serde_json::Map<_, _>>(), "body": body});
            writeln!(f, "{line}")?;
        }
        f.flush()?;
        eprintln!("wrote {} signed requests to {}", plan.len(), out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(send_open_loop(&args, &scheme, &secret, plan))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report["errors"].as_u64() == Some(0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn sign(
    scheme: &Scheme,
    secret: &str,
    body: &str,
    i: usize,
) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut headers = switchboard_verify::sign(
        scheme,
        secret,
        body.as_bytes(),
        &format!("msg_sim_{i}_{}", uuid::Uuid::new_v4().simple()),
        now,
    )
    .map_err(|e| anyhow::anyhow!("signing: {e}"))?
    .into_iter()
    .map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::String(v)))
    .collect::<Vec<_>>();
    headers.push(("content-type".into(), "application/json".into()));
    Ok(headers)
}

/// The error and its sources, without the URL (it is the same for every request).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(err) = cur {
        parts.push(err.to_string());
        cur = err.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

async fn send_open_loop(
    args: &SimulateArgs,
    scheme: &Scheme,
    secret: &str,
    plan: Vec<String>,
) -> anyhow::Result<serde_json::Value> {
    let connections = usize::try_from(args.connections)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight));
    // One permit per request on the wire: at most that many connections are ever busy, so the
    // pool never opens more.
    let on_the_wire = Arc::new(tokio::sync::Semaphore::new(connections));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<(u16, Duration), String>>();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let total = plan.len();
    let mut backlog = 0usize;
    for (i, body) in plan.into_iter().enumerate() {
        // Open loop: event i is due at start + i/rate, whatever happened to earlier ones.
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        // The timer wakes the loop up to a millisecond late, a few events at once: latency
        // counts from here, so it holds every wait the server causes (for a connection, for
        // the answer) and not the tool's own timer granularity.
        let dispatched = Instant::now();
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            backlog += 1;
            continue;
        };
        let headers = sign(scheme, secret, &body, i)?;
        let mut req = client.post(&args.signing.url).body(body);
        for (k, v) in headers {
            if let Some(v) = v.as_str() {
                req = req.header(k, v);
            }
        }
        let tx = tx.clone();
        let on_the_wire = on_the_wire.clone();
        tokio::spawn(async move {
            let r = match on_the_wire.acquire_owned().await {
                // Nothing closes it; were it closed, the report must still count the event.
                Err(e) => Err(e.to_string()),
                Ok(_wire) => match req.send().await {
                    Ok(resp) => Ok((resp.status().as_u16(), dispatched.elapsed())),
                    Err(e) => Err(error_chain(&e)),
                },
            };
            drop(permit);
            let _ = tx.send(r);
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(total);
    let (mut acked, mut duplicates, mut errors) = (0u64, 0u64, backlog as u64);
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    // Transport errors by message, so a run that lost requests says how.
    let mut transport_errors = std::collections::BTreeMap::<String, u64>::new();
    while let Some(r) = rx.recv().await {
        match r {
            Ok((status, d)) => {
                *statuses.entry(status).or_default() += 1;
                match status {
                    202 => acked += 1,
                    200 => duplicates += 1,
                    _ => errors += 1,
                }
                latencies.push(d);
            }
            Err(e) => {
                errors += 1;
                *transport_errors.entry(e).or_default() += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    Ok(serde_json::json!({
        "sent": total - backlog,
        "acked": acked,
        "duplicates": duplicates,
        "errors": errors,
        "backlog_skipped": backlog,
        "statuses": statuses,
        "transport_errors": transport_errors,
        "target_rate": args.rate,
        "achieved_rate": (total as f64) / elapsed.as_secs_f64(),
        "elapsed_s": elapsed.as_secs_f64(),
        "ack_latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "p999": pct(0.999), "max": pct(1.0)},
    }))
}
