//! `switchboard send`: post signed events, the quickest way to see a gateway work.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use switchboard_verify::{Encoding, Scheme};

/// Realistic Genesys notifications (one inbound call through queue "Support"), shipped in the binary.
const BUILTIN_EVENTS: &[(&str, &str)] = &[
    (
        "detail-customer-start",
        include_str!("../../assets/events/detail-customer-start.json"),
    ),
    (
        "detail-acd-start",
        include_str!("../../assets/events/detail-acd-start.json"),
    ),
    (
        "queue-conversation-call",
        include_str!("../../assets/events/queue-conversation-call.json"),
    ),
    (
        "detail-user-start",
        include_str!("../../assets/events/detail-user-start.json"),
    ),
    (
        "user-presence",
        include_str!("../../assets/events/user-presence.json"),
    ),
    (
        "user-routing-status",
        include_str!("../../assets/events/user-routing-status.json"),
    ),
    (
        "detail-acd-end",
        include_str!("../../assets/events/detail-acd-end.json"),
    ),
    (
        "detail-customer-end",
        include_str!("../../assets/events/detail-customer-end.json"),
    ),
    (
        "detail-acw",
        include_str!("../../assets/events/detail-acw.json"),
    ),
];

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemeArg {
    #[value(name = "hub-signature-256")]
    HubSignature256,
    StandardWebhooks,
    HmacHeader,
    ApiKey,
    Basic,
    None,
}

/// Where and how to sign: shared by `send` and `simulate`.
#[derive(Debug, Args)]
pub struct SigningArgs {
    /// Webhook URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/genesys")]
    pub url: String,
    /// Signing secret (default: $SWITCHBOARD_WEBHOOK_SECRET, then ./switchboard-data/webhook-secret).
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Authentication scheme of the source.
    #[arg(long, value_enum, default_value = "hub-signature-256")]
    pub scheme: SchemeArg,
    /// Header for hmac-header / api-key.
    #[arg(long)]
    pub header: Option<String>,
}

impl SigningArgs {
    /// The secret and the verify crate's scheme.
    pub fn resolve(&self) -> anyhow::Result<(String, Scheme)> {
        Ok((
            load_secret(self.secret.clone())?,
            scheme_of(self.scheme, self.header.clone()),
        ))
    }
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    signing: SigningArgs,
    /// Give every event a fresh CorrelationId so none is a duplicate of an earlier send.
    #[arg(long)]
    unique: bool,
    /// JSON files to send (one event each); the built-in Genesys events when none.
    files: Vec<PathBuf>,
}

/// The secret from the flag/environment, else the zero-config gateway's generated file.
pub fn load_secret(secret: Option<String>) -> anyhow::Result<String> {
    match secret {
        Some(s) => Ok(s),
        None => std::fs::read_to_string("switchboard-data/webhook-secret")
            .map(|s| s.trim().to_string())
            .context("no --secret given, $SWITCHBOARD_WEBHOOK_SECRET unset, and ./switchboard-data/webhook-secret unreadable"),
    }
}

/// The verify crate's scheme for a command-line choice.
pub fn scheme_of(arg: SchemeArg, header: Option<String>) -> Scheme {
    match arg {
        SchemeArg::HubSignature256 => Scheme::HubSignature256,
        SchemeArg::StandardWebhooks => Scheme::StandardWebhooks {
            tolerance_secs: 300,
        },
        SchemeArg::HmacHeader => Scheme::HmacHeader {
            header: header.unwrap_or_else(|| "X-Genesys-Webhook-Signature".into()),
            prefix: String::new(),
            encoding: Encoding::Base64,
        },
        SchemeArg::ApiKey => Scheme::ApiKey {
            header: header.unwrap_or_else(|| "x-api-key".into()),
        },
        SchemeArg::Basic => Scheme::Basic,
        SchemeArg::None => Scheme::None,
    }
}

pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let (secret, scheme) = args.signing.resolve()?;
    let mut events: Vec<(String, String)> = Vec::new();
    if args.files.is_empty() {
        events.extend(
            BUILTIN_EVENTS
                .iter()
                .map(|(n, b)| (n.to_string(), b.to_string())),
        );
    } else {
        for f in &args.files {
            let body =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            events.push((f.display().to_string(), body));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let failures = rt.block_on(async {
        let client = reqwest::Client::new();
        let mut failures = 0usize;
        for (name, body) in events {
            let body = if args.unique { freshen(&body)? } else { body };
            let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let headers = switchboard_verify::sign(&scheme, &secret, body.as_bytes(), &msg_id, now)
                .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
            let mut req = client
                .post(&args.signing.url)
                .header("content-type", "application/json")
                .body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    println!("{name}: {} {text}", status.as_u16());
                    if !status.is_success() {
                        failures += 1;
                    }
                }
                Err(e) => {
                    println!("{name}: error: {e}");
                    failures += 1;
                }
            }
        }
        Ok::<_, anyhow::Error>(failures)
    })?;
    if failures > 0 {
        bail!("{failures} event(s) were not accepted");
    }
    Ok(ExitCode::SUCCESS)
}

/// Replaces `metadata.CorrelationId` (or `detail.metadata.CorrelationId`, or `id`) with a new uuid.
fn freshen(body: &str) -> anyhow::Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(body).context("event is not JSON")?;
    let fresh = serde_json::Value::String(uuid::Uuid::new_v4().to_string());
    if let Some(m) = v.pointer_mut("/metadata/CorrelationId") {
        *m = fresh;
    } else if let Some(m) = v.pointer_mut("/detail/metadata/CorrelationId") {
        *m = fresh.clone();
        if let Some(id) = v.pointer_mut("/id") {
            *id = fresh;
        }
    } else if let Some(obj) = v.as_object_mut() {
        obj.insert("id".into(), fresh);
    }
    Ok(v.to_string())
}
