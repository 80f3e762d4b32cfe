//! The gateway's configuration: one TOML file, every key defaulted, validated at load.
//!
//! `Config::default()` is the zero-config gateway: one `hub-signature-256` webhook source at
//! `/webhooks/genesys` and one catch-all rule writing every event to `<data-dir>/events.jsonl`.
//! Rules and targets use the field names of the AWS API (`EventPattern`, `Targets`, `Arn`,
//! `InputTransformer`, `RetryPolicy`) as aliases, so rule files written for a real EventBridge bus
//! read unchanged.
//!
//! Validation errors name the file, the line and the key path (`rules[1].targets[0].arn`), because a
//! gateway that refuses to start must say exactly why.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchboard_event::NormalizeOptions;
use switchboard_pattern::{InputTransformerSpec, Limits, Pattern, TargetInput};
use toml::Spanned;

use crate::config_aws;
pub use crate::config_aws::{
    AwsBusConfig, AwsSection, ClaimCheckConfig, DeadLetterConfig, DedupBackend,
    EventBridgeTargetConfig, S3TargetConfig, SqsSourceConfig, SqsTargetConfig,
};

/// Name of the secret file generated on first start when no webhook secret is configured.
pub const GENERATED_SECRET_FILE: &str = "webhook-secret";

/// A configuration problem, located in the file when possible.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or a type mismatch; the message carries line and column.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The TOML parser's message (includes line, column and the offending key).
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        /// The file (or `<default>`).
        file: String,
        /// 1-based line of the enclosing entry, 0 when unknown.
        line: usize,
        /// Dotted key path, e.g. `rules[0].targets[1].arn`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration file.
///
/// In a file, every section is optional. A file without `[[sources]]` gets the zero-config Genesys
/// webhook source; `[[targets]]` and `[[rules]]` default to none, because a file that routes
/// anything should say so itself rather than inherit a hidden catch-all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Envelope fields the gateway fills in for wrapped events.
    #[serde(default)]
    pub envelope: EnvelopeConfig,
    /// Default dedup window for all sources.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Store tuning.
    #[serde(default)]
    pub store: StoreConfig,
    /// Admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Event pattern limits (AWS defaults).
    #[serde(default)]
    pub patterns: PatternLimitsConfig,
    /// Genesys Cloud: the Platform API client (and the EventBridge integration to provision).
    #[serde(default)]
    pub genesys: Option<GenesysConfig>,
    /// HTTP ingest endpoints.
    #[serde(default = "default_sources")]
    pub sources: Vec<Spanned<SourceConfig>>,
    /// Delivery targets, referenced by rules through `arn`.
    #[serde(default)]
    pub targets: Vec<Spanned<TargetConfig>>,
    /// Routing rules.
    #[serde(default)]
    pub rules: Vec<Spanned<RuleConfig>>,
    /// AWS: clients, and what `aws plan|apply` provisions.
    #[serde(default)]
    pub aws: Option<AwsSection>,
}

fn default_sources() -> Vec<Spanned<SourceConfig>> {
    vec![Spanned::new(0..0, SourceConfig::default_genesys())]
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            envelope: EnvelopeConfig::default(),
            dedup: DedupConfig::default(),
            store: StoreConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            patterns: PatternLimitsConfig::default(),
            genesys: None,
            aws: None,
            sources: default_sources(),
            targets: vec![Spanned::new(
                0..0,
                TargetConfig {
                    name: "events-file".into(),
                    kind: TargetKind::File {
                        path: PathBuf::from("events.jsonl"),
                    },
                    concurrency: default_concurrency(),
                    batch_size_setting: None,
                    linger_ms: None,
                    claim_check: None,
                },
            )],
            rules: vec![Spanned::new(
                0..0,
                RuleConfig {
                    name: "all-events".into(),
                    description: Some(
                        "Zero-config catch-all: every event to the file target".into(),
                    ),
                    state: RuleState::Enabled,
                    event_pattern: None,
                    event_pattern_file: None,
                    targets: vec![RuleTargetConfig {
                        id: "events-file".into(),
                        arn: "events-file".into(),
                        input: None,
                        input_path: None,
                        input_transformer: None,
                        retry_policy: RetryPolicyConfig::default(),
                        dead_letter_config: None,
                    }],
                },
            )],
        }
    }
}

/// Ceiling for `server.max_body_bytes`. The envelope that wraps a body must fit in one
/// journal record (256 MiB); a bound far below that keeps every accepted request storable
/// and a misconfigured gateway from buffering huge bodies in memory.
pub const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind; `127.0.0.1:8080` so a first run is never exposed by accident.
    pub listen: SocketAddr,
    /// Directory for the store, generated secrets and file targets with relative paths.
    pub data_dir: PathBuf,
    /// Largest accepted request body; larger ones get 413 without being buffered.
    pub max_body_bytes: usize,
    /// Deepest accepted JSON nesting; deeper bodies get 400 before parsing.
    pub max_json_depth: usize,
    /// Whole-request deadline (headers and body); protects against slow clients.
    pub request_timeout_secs: u64,
    /// Time allowed for a request's headers, and for an idle keep-alive connection (slowloris).
    pub header_timeout_secs: u64,
    /// Connections being served at once (with HTTP state); others wait for a slot, for at most
    /// `header_timeout_secs`, then are answered 503.
    pub max_connections: usize,
    /// Connections accepted that have not sent a byte yet, or that spoke and wait for a serving
    /// slot; beyond it new ones are closed at once. `serve` sizes the descriptor table for
    /// `max_connections + max_pending_connections + 512` at start, raising the soft open-files
    /// limit toward the hard one, and warns if that still does not fit.
    pub max_pending_connections: usize,
    /// Seconds a client is told to wait (`Retry-After`) when ingest is refused with 503.
    pub retry_after_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("switchboard-data"),
            max_body_bytes: 4 * 1024 * 1024,
            max_json_depth: 64,
            request_timeout_secs: 30,
            header_timeout_secs: 10,
            max_connections: 1024,
            max_pending_connections: 16_384,
            retry_after_secs: 1,
        }
    }
}

/// `[envelope]`: what Genesys' EventBridge integration would put there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvelopeConfig {
    /// `source` of wrapped events.
    pub source: String,
    /// `account` of wrapped events (12 digits).
    pub account: String,
    /// `region` of wrapped events.
    pub region: String,
}

impl Default for EnvelopeConfig {
    fn default() -> Self {
        EnvelopeConfig {
            source: "genesys.cloud".into(),
            account: "000000000000".into(),
            region: "local".into(),
        }
    }
}

/// `[dedup]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// How long a dedup key is remembered, unless a source overrides it.
    pub window_secs: u64,
    /// `local` (the embedded store) or `dynamodb` (shared by replicas).
    pub backend: DedupBackend,
    /// `dynamodb`: the table (partition key `pk`, TTL attribute `expires_at`).
    pub table: String,
    /// `dynamodb`: how long a claim stays pending before another replica may take the key over.
    pub lease_secs: u64,
    /// `dynamodb`: this replica's owner token (default: generated once, kept in the data dir).
    pub owner: Option<String>,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window_secs: 24 * 3600,
            backend: DedupBackend::Local,
            table: "switchboard-dedup".into(),
            lease_secs: 30,
            owner: None,
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Most writes committed by one fsync.
    pub max_batch: usize,
    /// Writes waiting for the writer; when full, ingest answers 503.
    pub queue_capacity: usize,
    /// How long the ingest log keeps events (for inspection and replay).
    pub event_retention_secs: u64,
    /// Recently committed dedup keys kept in memory, so retries are answered without a write
    /// transaction (about 200 bytes each); 0 turns the cache off.
    pub dedup_cache_entries: usize,
    /// Microseconds the writer waits once for more writes when fewer than 8 are queued, so
    /// sparse arrivals share a commit; 0 commits at once. At most 100 000.
    pub commit_linger_us: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_batch: 512,
            queue_capacity: 4096,
            event_retention_secs: 7 * 24 * 3600,
            dedup_cache_entries: 65_536,
            commit_linger_us: 300,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token; `SWITCHBOARD_ADMIN_TOKEN` overrides. Without one the admin API answers only
    /// when the listener is on loopback.
    pub token: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` overrides.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[patterns]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatternLimitsConfig {
    /// Longest accepted event pattern in characters (AWS: 2048, raisable to 4096).
    pub max_pattern_chars: usize,
}

impl Default for PatternLimitsConfig {
    fn default() -> Self {
        PatternLimitsConfig {
            max_pattern_chars: 2048,
        }
    }
}

/// `[genesys]`: one Genesys Cloud org, reached with OAuth client credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesysConfig {
    /// Region, by SDK name (`eu_west_1`) or domain (`mypurecloud.ie`).
    #[serde(default)]
    pub region: Option<String>,
    /// Override of the API base URL (tests, private deployments).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Override of the login base URL.
    #[serde(default)]
    pub login_base_url: Option<String>,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret (prefer `client_secret_env`).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Environment variable holding the client secret.
    #[serde(default = "default_genesys_secret_env")]
    pub client_secret_env: String,
    /// Client-side request budget per minute (below Genesys' per-token limit).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// The Amazon EventBridge integration `switchboard genesys plan|apply` manages.
    #[serde(default)]
    pub eventbridge: Option<switchboard_genesys::provision::EventBridgeSpec>,
}

fn default_genesys_secret_env() -> String {
    "GENESYS_CLIENT_SECRET".into()
}

impl std::fmt::Debug for GenesysConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenesysConfig")
            .field("region", &self.region)
            .field("client_id", &self.client_id)
            .field("client_secret_env", &self.client_secret_env)
            .finish_non_exhaustive()
    }
}

impl GenesysConfig {
    /// The API client configuration, with the secret resolved from the config or environment.
    pub fn client_config(&self) -> Result<switchboard_genesys::ClientConfig, String> {
        let secret = secret_value(&self.client_secret, &Some(self.client_secret_env.clone()))
            .ok_or_else(|| {
                format!(
                    "genesys: no client secret (set {} or genesys.client_secret)",
                    self.client_secret_env
                )
            })?;
        let region = self.region.clone().unwrap_or_else(|| "us_east_1".into());
        let mut c = switchboard_genesys::ClientConfig::new(&region, self.client_id.clone(), secret);
        if self.region.is_none() && self.api_base_url.is_some() {
            c.region = None;
        }
        c.api_base_url = self.api_base_url.clone();
        c.login_base_url = self.login_base_url.clone();
        if let Some(r) = self.rate_limit {
            c.rate_limit = r;
        }
        Ok(c)
    }
}

/// `[[sources]]`: one ingest source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name used in metrics, logs and the store.
    pub name: String,
    /// `webhook` (default) or `genesys-notifications`.
    #[serde(rename = "type", default = "default_source_type")]
    pub kind: String,
    /// `webhook`: URL path, e.g. `/webhooks/genesys`.
    #[serde(default)]
    pub path: Option<String>,
    /// `webhook`: how requests are authenticated.
    #[serde(default)]
    pub auth: Option<SourceAuth>,
    /// `genesys-notifications`: topics and channel settings (uses the `[genesys]` client).
    #[serde(default)]
    pub notifications: Option<switchboard_genesys::notifications::NotificationConfig>,
    /// `sqs`: the queue to long-poll.
    #[serde(default)]
    pub sqs: Option<SqsSourceConfig>,
    /// Overrides `[dedup].window_secs` for this source.
    #[serde(default)]
    pub dedup_window_secs: Option<u64>,
    /// Normalizer settings (dedup key mode, field paths).
    #[serde(default)]
    pub normalize: NormalizeOptions,
}

/// Source types.
pub const SOURCE_WEBHOOK: &str = "webhook";
/// The Genesys Notification API WebSocket source.
pub const SOURCE_GENESYS_NOTIFICATIONS: &str = "genesys-notifications";
/// An SQS queue (e.g. fed by an EventBridge rule on the Genesys partner bus).
pub const SOURCE_SQS: &str = "sqs";

fn default_source_type() -> String {
    "webhook".into()
}

impl SourceConfig {
    fn default_genesys() -> Self {
        SourceConfig {
            name: "genesys".into(),
            kind: default_source_type(),
            path: Some("/webhooks/genesys".into()),
            notifications: None,
            sqs: None,
            auth: Some(SourceAuth {
                scheme: AuthScheme::HubSignature256,
                secrets: Vec::new(),
                secrets_env: Some("SWITCHBOARD_WEBHOOK_SECRET".into()),
                secret_files: Vec::new(),
                header: None,
                prefix: None,
                encoding: None,
                tolerance_secs: None,
                generate: true,
            }),
            dedup_window_secs: None,
            normalize: NormalizeOptions::default(),
        }
    }
}

/// A source's authentication. Secrets are listed in rotation order; any one matching is enough.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceAuth {
    /// The scheme.
    pub scheme: AuthScheme,
    /// Secrets inline (prefer `secrets_env` or `secret_files`).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// An environment variable holding one secret, or several separated by commas.
    #[serde(default)]
    pub secrets_env: Option<String>,
    /// Files each holding one secret (trailing newline ignored).
    #[serde(default)]
    pub secret_files: Vec<PathBuf>,
    /// `hmac-header`/`api-key`: the header carrying the signature or key.
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac-header`: text before the encoded MAC, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `hmac-header`: `base64` (default) or `hex`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// `standard-webhooks`: accepted clock skew in seconds (default 300).
    #[serde(default)]
    pub tolerance_secs: Option<u64>,
    /// Generate and keep a secret in the data dir when none is configured (the zero-config source).
    #[serde(default)]
    pub generate: bool,
}

impl std::fmt::Debug for SourceAuth {
    // Secrets never reach logs, not even through `{:?}` of the whole config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceAuth")
            .field("scheme", &self.scheme)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("secrets_env", &self.secrets_env)
            .field("secret_files", &self.secret_files)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Source authentication schemes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthScheme {
    /// Genesys Open Messaging: `X-Hub-Signature-256: sha256=<base64 HMAC>`.
    #[serde(rename = "hub-signature-256")]
    HubSignature256,
    /// standardwebhooks.com: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// A configurable HMAC header (the seeds' `X-Genesys-Webhook-Signature`).
    HmacHeader,
    /// A static key in a header (EventBridge API destinations).
    ApiKey,
    /// HTTP Basic (EventBridge API destinations, Genesys data actions).
    Basic,
    /// No authentication; must be chosen explicitly.
    None,
}

/// `[[targets]]`
///
/// No `deny_unknown_fields` here: serde cannot combine it with `flatten`. Unknown keys are still
/// refused, by the kind's own struct (`HttpTargetConfig`) or the kind enum.
#[derive(Debug, Clone, Deserialize)]
pub struct TargetConfig {
    /// Name (1–100 chars of `[A-Za-z0-9._-]`), what rules put in `arn`.
    pub name: String,
    /// Kind and kind-specific settings.
    #[serde(flatten)]
    pub kind: TargetKind,
    /// Deliveries in flight at once for this target.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Deliveries fetched from the queue per round, 1–1000 (default 1,000 for file targets,
    /// which sync once per batch; 64 otherwise). See [`TargetConfig::batch_size`].
    #[serde(default, rename = "batch_size")]
    pub batch_size_setting: Option<usize>,
    /// How long a worker waits for a partial batch to fill (default 20 ms for AWS targets,
    /// 10 ms for file targets, 0 otherwise; an `s3` ndjson target uses its window).
    #[serde(default)]
    pub linger_ms: Option<u64>,
    /// Store events over the size limit aside and send a small pointer event instead.
    #[serde(default)]
    pub claim_check: Option<ClaimCheckConfig>,
}

fn default_concurrency() -> usize {
    4
}

impl TargetConfig {
    /// Deliveries fetched from the queue per round: the setting, or the kind's default. A file
    /// target pays one `fdatasync` per batch, so it reads as many as it may (1,000 per sync
    /// instead of 64 cut its fsyncs 7.5-fold at 30,000 events/s; BENCHMARKS.md); the others
    /// send entry-limited calls and keep 64.
    pub fn batch_size(&self) -> usize {
        self.batch_size_setting.unwrap_or(match self.kind {
            TargetKind::File { .. } => 1000,
            _ => 64,
        })
    }
}

/// Target kinds.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum TargetKind {
    /// POST JSON to an HTTP endpoint.
    Http(HttpTargetConfig),
    /// Append one line per event to a file (relative paths are under the data dir).
    File {
        /// The file.
        path: PathBuf,
    },
    /// Print one line per event on standard output.
    Stdout,
    /// `PutEvents` to an EventBridge bus.
    Eventbridge(EventBridgeTargetConfig),
    /// `SendMessageBatch` to an SQS queue.
    Sqs(SqsTargetConfig),
    /// Objects in an S3 bucket.
    S3(S3TargetConfig),
}

/// `type = "http"` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTargetConfig {
    /// Endpoint; https unless the host is loopback or `allow_insecure_http`.
    pub url: String,
    /// Authentication.
    #[serde(default)]
    pub auth: HttpAuth,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout.
    #[serde(default = "default_http_timeout")]
    pub timeout_secs: u64,
    /// Permit plain http to non-loopback hosts.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_http_timeout() -> u64 {
    10
}

/// HTTP target authentication. Secret values may be given inline or via `*_env`.
#[derive(Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HttpAuth {
    /// No credentials.
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        #[serde(default)]
        password: Option<String>,
        /// Environment variable holding the password.
        #[serde(default)]
        password_env: Option<String>,
    },
    /// A static key in a header.
    ApiKey {
        /// Header name.
        header: String,
        /// Key.
        #[serde(default)]
        value: Option<String>,
        /// Environment variable holding the key.
        #[serde(default)]
        value_env: Option<String>,
    },
    /// `Authorization: Bearer <token>` with a static token (e.g. a JWT).
    Bearer {
        /// Token.
        #[serde(default)]
        token: Option<String>,
        /// Environment variable holding the token.
        #[serde(default)]
        token_env: Option<String>,
    },
    /// OAuth 2 client credentials, token cached until shortly before expiry and refreshed on 401.
    Oauth2 {
        /// Token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        #[serde(default)]
        client_secret: Option<String>,
        /// Environment variable holding the client secret.
        #[serde(default)]
        client_secret_env: Option<String>,
        /// Requested scope.
        #[serde(default)]
        scope: Option<String>,
    },
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            HttpAuth::None => "none",
            HttpAuth::Basic { .. } => "basic",
            HttpAuth::ApiKey { .. } => "api-key",
            HttpAuth::Bearer { .. } => "bearer",
            HttpAuth::Oauth2 { .. } => "oauth2",
        };
        write!(f, "HttpAuth({kind}, secrets redacted)")
    }
}

/// `[[rules]]`, in the shape of EventBridge's `PutRule` + `PutTargets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name (1–64 of `[.-_A-Za-z0-9]`).
    #[serde(alias = "Name")]
    pub name: String,
    /// Free text.
    #[serde(default, alias = "Description")]
    pub description: Option<String>,
    /// `ENABLED` (default) or `DISABLED`.
    #[serde(default, alias = "State")]
    pub state: RuleState,
    /// The pattern, as a TOML table or a JSON string (as the aws CLI prints it). Absent = match all.
    #[serde(default, alias = "EventPattern")]
    pub event_pattern: Option<toml::Value>,
    /// Read the pattern from a JSON file (relative to the config file).
    #[serde(default)]
    pub event_pattern_file: Option<PathBuf>,
    /// Up to five targets.
    #[serde(default, alias = "Targets")]
    pub targets: Vec<RuleTargetConfig>,
}

/// Rule state.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum RuleState {
    /// Matching.
    #[default]
    Enabled,
    /// Loaded and listed, but matches nothing.
    Disabled,
}

/// One entry of a rule's `Targets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTargetConfig {
    /// Id unique within the rule (becomes `TARGET_ARN` in dead letters).
    #[serde(alias = "Id")]
    pub id: String,
    /// Name of a `[[targets]]` entry.
    #[serde(alias = "Arn")]
    pub arn: String,
    /// Constant JSON sent instead of the event.
    #[serde(default, alias = "Input")]
    pub input: Option<String>,
    /// JSONPath selecting part of the event.
    #[serde(default, alias = "InputPath")]
    pub input_path: Option<String>,
    /// AWS input transformer.
    #[serde(default, alias = "InputTransformer")]
    pub input_transformer: Option<InputTransformerSpec>,
    /// Retry policy.
    #[serde(default, alias = "RetryPolicy")]
    pub retry_policy: RetryPolicyConfig,
    /// An SQS queue that receives dead letters (instead of the embedded DLQ).
    #[serde(default, alias = "DeadLetterConfig")]
    pub dead_letter_config: Option<DeadLetterConfig>,
}

/// EventBridge's `RetryPolicy`, plus the backoff shape.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicyConfig {
    /// 0–185 retries after the first attempt.
    #[serde(alias = "MaximumRetryAttempts")]
    pub maximum_retry_attempts: u32,
    /// 60–86400 seconds from ingest after which no retry is made.
    #[serde(alias = "MaximumEventAgeInSeconds")]
    pub maximum_event_age_in_seconds: u32,
    /// `exponential` (full jitter, default) or `linear`.
    #[serde(alias = "Backoff")]
    pub backoff: BackoffKind,
    /// First delay in milliseconds.
    pub base_delay_ms: u64,
    /// Largest delay in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for RetryPolicyConfig {
    fn default() -> Self {
        RetryPolicyConfig {
            maximum_retry_attempts: 185,
            maximum_event_age_in_seconds: 86_400,
            backoff: BackoffKind::Exponential,
            base_delay_ms: 1_000,
            max_delay_ms: 300_000,
        }
    }
}

/// Backoff shape between attempts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// `random(0, min(max, base * 2^attempt))` (full jitter).
    #[default]
    Exponential,
    /// `min(max, base * attempt)`, ±20 % jitter.
    Linear,
}

/// A rule after validation: compiled pattern and target inputs.
#[derive(Debug, Clone)]
pub struct ValidRule {
    /// Name.
    pub name: String,
    /// The compiled pattern source (normalized JSON) for listing.
    pub pattern_json: String,
    /// Parsed pattern; `None` matches every event.
    pub pattern: Option<Pattern>,
    /// Enabled?
    pub enabled: bool,
    /// Targets with compiled inputs.
    pub targets: Vec<ValidRuleTarget>,
}

/// One validated rule target.
#[derive(Debug, Clone)]
pub struct ValidRuleTarget {
    /// Rule-local id.
    pub id: String,
    /// Target name.
    pub target: String,
    /// What is sent.
    pub input: TargetInput,
    /// Retry policy.
    pub retry: RetryPolicyConfig,
    /// SQS dead-letter queue (ARN or URL).
    pub dead_letter_queue: Option<String>,
}

/// Where the configuration came from, for error messages and relative paths.
#[derive(Debug, Clone)]
pub struct ConfigOrigin {
    /// Display name of the file (`<default>` for the built-in config).
    pub file: String,
    /// Its text (for line numbers).
    text: String,
    /// Directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
}

impl ConfigOrigin {
    fn line_of(&self, span: std::ops::Range<usize>) -> usize {
        if span.is_empty() && span.start == 0 {
            return 0;
        }
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }
}

/// A loaded and validated configuration.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The raw configuration.
    pub config: Config,
    /// The validated rules, in file order.
    pub rules: Vec<ValidRule>,
    /// Where it came from.
    pub origin: ConfigOrigin,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_toml(&text, &path.display().to_string(), base_dir)
    }

    /// Parses and validates configuration text.
    pub fn from_toml(
        text: &str,
        file: &str,
        base_dir: PathBuf,
    ) -> Result<LoadedConfig, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: file.to_string(),
            message: e.to_string(),
        })?;
        let origin = ConfigOrigin {
            file: file.to_string(),
            text: text.to_string(),
            base_dir,
        };
        config.validate(origin)
    }

    /// The zero-config configuration.
    pub fn builtin() -> LoadedConfig {
        let origin = ConfigOrigin {
            file: "<default>".into(),
            text: String::new(),
            base_dir: PathBuf::from("."),
        };
        match Config::default().validate(origin) {
            Ok(loaded) => loaded,
            // The built-in configuration is a constant; a failure here is a bug caught by tests.
            Err(e) => unreachable!("built-in configuration is invalid: {e}"),
        }
    }

    /// Checks every cross-reference and bound, and compiles rules.
    pub fn validate(self, origin: ConfigOrigin) -> Result<LoadedConfig, ConfigError> {
        let err =
            |span: std::ops::Range<usize>, key: String, message: String| ConfigError::Invalid {
                file: origin.file.clone(),
                line: origin.line_of(span),
                key,
                message,
            };
        let s = &self.server;
        if s.max_body_bytes == 0 || s.max_body_bytes > MAX_BODY_BYTES_LIMIT {
            return Err(err(
                0..0,
                "server.max_body_bytes".into(),
                format!("must be between 1 and {MAX_BODY_BYTES_LIMIT}"),
            ));
        }
        if s.header_timeout_secs == 0 || s.request_timeout_secs == 0 {
            return Err(err(
                0..0,
                "server.header_timeout_secs / server.request_timeout_secs".into(),
                "must be > 0".into(),
            ));
        }
        if !(1..=128).contains(&s.max_json_depth) {
            return Err(err(
                0..0,
                "server.max_json_depth".into(),
                "must be 1–128".into(),
            ));
        }
        if s.max_connections == 0
            || s.max_pending_connections == 0
            || self.store.max_batch == 0
            || self.store.queue_capacity == 0
        {
            return Err(err(
                0..0,
                "server.max_connections / store.max_batch / store.queue_capacity".into(),
                "must be > 0".into(),
            ));
        }
        if self.store.commit_linger_us > switchboard_store::MAX_COMMIT_LINGER_US {
            return Err(err(
                0..0,
                "store.commit_linger_us".into(),
                format!(
                    "must be at most {} (100 ms)",
                    switchboard_store::MAX_COMMIT_LINGER_US
                ),
            ));
        }
        if !(2048..=4096).contains(&self.patterns.max_pattern_chars) {
            return Err(err(
                0..0,
                "patterns.max_pattern_chars".into(),
                "must be 2048–4096 (the AWS quota range)".into(),
            ));
        }
        if self.envelope.account.len() != 12
            || !self.envelope.account.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err(
                0..0,
                "envelope.account".into(),
                "must be 12 digits".into(),
            ));
        }

        let mut paths = HashSet::new();
        let mut source_names = HashSet::new();
        for (i, src) in self.sources.iter().enumerate() {
            let span = src.span();
            let src = src.get_ref();
            let key = |k: &str| format!("sources[{i}].{k}");
            if src.kind != SOURCE_WEBHOOK
                && src.kind != SOURCE_GENESYS_NOTIFICATIONS
                && src.kind != SOURCE_SQS
            {
                return Err(err(
                    span,
                    key("type"),
                    format!(
                        "unknown source type {:?} (expected \"webhook\", \"genesys-notifications\" or \"sqs\")",
                        src.kind
                    ),
                ));
            }
            if !valid_name(&src.name, 100) {
                return Err(err(
                    span,
                    key("name"),
                    "must be 1–100 characters of [A-Za-z0-9._-]".into(),
                ));
            }
            if !source_names.insert(src.name.clone()) {
                return Err(err(
                    span,
                    key("name"),
                    format!("duplicate source name {:?}", src.name),
                ));
            }
            src.normalize
                .validate()
                .map_err(|e| err(span.clone(), key("normalize"), e.to_string()))?;
            if src.kind == SOURCE_SQS {
                if !config_aws::AWS_BUILT_IN {
                    return Err(err(
                        span,
                        key("type"),
                        config_aws::not_built("an sqs source"),
                    ));
                }
                let Some(q) = &src.sqs else {
                    return Err(err(
                        span,
                        key("sqs"),
                        "an sqs source needs sqs = { queue = \"<queue URL or ARN>\" }".into(),
                    ));
                };
                if q.wait_time_secs > 20 {
                    return Err(err(span, key("sqs.wait_time_secs"), "must be 0–20".into()));
                }
                if !(1..=10).contains(&q.max_messages) {
                    return Err(err(span, key("sqs.max_messages"), "must be 1–10".into()));
                }
                if !(1..=43_200).contains(&q.visibility_timeout_secs) {
                    return Err(err(
                        span,
                        key("sqs.visibility_timeout_secs"),
                        "must be 1–43200".into(),
                    ));
                }
                if src.path.is_some() || src.auth.is_some() || src.notifications.is_some() {
                    return Err(err(
                        span,
                        key("path"),
                        "path, auth and notifications do not apply to an sqs source".into(),
                    ));
                }
                continue;
            }
            if src.sqs.is_some() {
                return Err(err(span, key("sqs"), "only for type = \"sqs\"".into()));
            }
            if src.kind == SOURCE_GENESYS_NOTIFICATIONS {
                let Some(n) = &src.notifications else {
                    return Err(err(
                        span,
                        key("notifications"),
                        "a genesys-notifications source needs notifications = { topics = [...] }"
                            .into(),
                    ));
                };
                if n.topics.is_empty() {
                    return Err(err(
                        span,
                        key("notifications.topics"),
                        "must name at least one topic".into(),
                    ));
                }
                if self.genesys.is_none() {
                    return Err(err(span, key("type"), "a genesys-notifications source needs a [genesys] section (region, client_id, client secret)".into()));
                }
                if src.path.is_some() || src.auth.is_some() {
                    return Err(err(
                        span,
                        key("path"),
                        "path and auth belong to webhook sources".into(),
                    ));
                }
                continue;
            }
            if src.notifications.is_some() {
                return Err(err(
                    span,
                    key("notifications"),
                    "only for type = \"genesys-notifications\"".into(),
                ));
            }
            let (Some(path), Some(a)) = (&src.path, &src.auth) else {
                return Err(err(
                    span,
                    key("path"),
                    "a webhook source needs path and auth".into(),
                ));
            };
            if !path.starts_with('/')
                || path.starts_with("/admin")
                || RESERVED_PATHS.contains(&path.as_str())
            {
                return Err(err(
                    span,
                    key("path"),
                    format!(
                        "{:?} must start with / and not clash with /admin, /healthz, /readyz, /metrics",
                        path
                    ),
                ));
            }
            if !paths.insert(path.clone()) {
                return Err(err(span, key("path"), format!("duplicate path {path:?}")));
            }
            let needs_header = matches!(a.scheme, AuthScheme::ApiKey);
            if needs_header && a.header.is_none() {
                return Err(err(
                    span,
                    key("auth.header"),
                    "api-key needs the header name".into(),
                ));
            }
            let has_secret_source = !a.secrets.is_empty()
                || a.secrets_env.is_some()
                || !a.secret_files.is_empty()
                || a.generate;
            if a.scheme != AuthScheme::None && !has_secret_source {
                return Err(err(
                    span,
                    key("auth"),
                    "needs secrets, secrets_env or secret_files".into(),
                ));
            }
            if let Some(enc) = &a.encoding
                && enc != "base64"
                && enc != "hex"
            {
                return Err(err(
                    span,
                    key("auth.encoding"),
                    format!("{enc:?}: expected \"base64\" or \"hex\""),
                ));
            }
        }

        if self.dedup.backend == DedupBackend::Dynamodb {
            if !config_aws::AWS_BUILT_IN {
                return Err(err(
                    0..0,
                    "dedup.backend".into(),
                    config_aws::not_built("the dynamodb dedup backend"),
                ));
            }
            if self.dedup.table.is_empty() || !(1..=3600).contains(&self.dedup.lease_secs) {
                return Err(err(
                    0..0,
                    "dedup.table / dedup.lease_secs".into(),
                    "need a table name and a lease of 1–3600 s".into(),
                ));
            }
        }
        if let Some(aws) = &self.aws {
            if !config_aws::AWS_BUILT_IN {
                return Err(err(0..0, "aws".into(), config_aws::not_built("[aws]")));
            }
            if aws.access_key_id.is_some()
                != (aws.secret_access_key.is_some() || aws.secret_access_key_env.is_some())
            {
                return Err(err(
                    0..0,
                    "aws.access_key_id".into(),
                    "give both access_key_id and secret_access_key(_env), or neither (standard chain)"
                        .into(),
                ));
            }
            if aws.timeout_secs == 0 || aws.sdk_max_attempts == 0 {
                return Err(err(
                    0..0,
                    "aws.timeout_secs / aws.sdk_max_attempts".into(),
                    "must be > 0".into(),
                ));
            }
            let limits = Limits {
                max_pattern_chars: self.patterns.max_pattern_chars,
                ..Limits::default()
            };
            for (i, r) in aws.rules.iter().enumerate() {
                let key = |k: &str| format!("aws.rules[{i}].{k}");
                if !valid_name(&r.name, 64) {
                    return Err(err(
                        0..0,
                        key("name"),
                        "must be 1–64 characters of [A-Za-z0-9._-]".into(),
                    ));
                }
                if let Some(p) = &r.event_pattern {
                    let json = match p {
                        toml::Value::String(s) => s.clone(),
                        v => toml_to_json(v).to_string(),
                    };
                    Pattern::parse(&json, &limits)
                        .map_err(|e| err(0..0, key("event_pattern"), e.to_string()))?;
                } else {
                    return Err(err(
                        0..0,
                        key("event_pattern"),
                        "an AWS rule needs an event pattern".into(),
                    ));
                }
                if r.targets.len() > 5 {
                    return Err(err(
                        0..0,
                        key("targets"),
                        "at most 5 targets per rule".into(),
                    ));
                }
                for (j, t) in r.targets.iter().enumerate() {
                    if !t.arn.starts_with("arn:") {
                        return Err(err(
                            0..0,
                            format!("aws.rules[{i}].targets[{j}].arn"),
                            format!("{:?}: an AWS rule target needs an ARN", t.arn),
                        ));
                    }
                }
            }
        }

        let mut target_names = HashSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let span = t.span();
            let t = t.get_ref();
            let key = |k: &str| format!("targets[{i}].{k}");
            if !valid_name(&t.name, 100) {
                return Err(err(
                    span,
                    key("name"),
                    "must be 1–100 characters of [A-Za-z0-9._-]".into(),
                ));
            }
            if !target_names.insert(t.name.clone()) {
                return Err(err(
                    span,
                    key("name"),
                    format!("duplicate target name {:?}", t.name),
                ));
            }
            if !(1..=256).contains(&t.concurrency) {
                return Err(err(span, key("concurrency"), "must be 1–256".into()));
            }
            if !(1..=1000).contains(&t.batch_size()) {
                return Err(err(span, key("batch_size"), "must be 1–1000".into()));
            }
            match &t.kind {
                TargetKind::Http(h) => {
                    validate_http_target(h).map_err(|(k, m)| err(span.clone(), key(k), m))?;
                }
                TargetKind::Eventbridge(_) | TargetKind::Sqs(_) | TargetKind::S3(_) => {
                    validate_aws_target(&t.kind).map_err(|(k, m)| err(span.clone(), key(k), m))?;
                }
                TargetKind::File { .. } | TargetKind::Stdout => {}
            }
            if let Some(cc) = &t.claim_check {
                if cc.store.starts_with("s3://") && !config_aws::AWS_BUILT_IN {
                    return Err(err(
                        span,
                        key("claim_check.store"),
                        config_aws::not_built("an s3:// claim-check store"),
                    ));
                }
                if cc.max_bytes == Some(0) {
                    return Err(err(
                        span,
                        key("claim_check.max_bytes"),
                        "must be > 0".into(),
                    ));
                }
            }
        }

        let limits = Limits {
            max_pattern_chars: self.patterns.max_pattern_chars,
            ..Limits::default()
        };
        let mut rules = Vec::with_capacity(self.rules.len());
        let mut rule_names = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let span = r.span();
            let r = r.get_ref();
            let key = |k: &str| format!("rules[{i}].{k}");
            if !valid_name(&r.name, 64) {
                return Err(err(
                    span,
                    key("name"),
                    "must be 1–64 characters of [A-Za-z0-9._-]".into(),
                ));
            }
            if !rule_names.insert(r.name.clone()) {
                return Err(err(
                    span,
                    key("name"),
                    format!("duplicate rule name {:?}", r.name),
                ));
            }
            let pattern_json = match (&r.event_pattern, &r.event_pattern_file) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        span,
                        key("event_pattern"),
                        "give event_pattern or event_pattern_file, not both".into(),
                    ));
                }
                (Some(toml::Value::String(s)), None) => Some(s.clone()),
                (Some(v), None) => Some(toml_to_json(v).to_string()),
                (None, Some(file)) => {
                    let p = origin.base_dir.join(file);
                    Some(read_small(&p, 64 * 1024).map_err(|e| {
                        err(
                            span.clone(),
                            key("event_pattern_file"),
                            format!("{}: {e}", p.display()),
                        )
                    })?)
                }
                (None, None) => None,
            };
            let pattern = match &pattern_json {
                Some(json) => Some(
                    Pattern::parse(json, &limits)
                        .map_err(|e| err(span.clone(), key("event_pattern"), e.to_string()))?,
                ),
                None => None,
            };
            if r.targets.len() > 5 {
                return Err(err(
                    span,
                    key("targets"),
                    "at most 5 targets per rule (as EventBridge)".into(),
                ));
            }
            let mut ids = HashSet::new();
            let mut arns = HashSet::new();
            let mut targets = Vec::with_capacity(r.targets.len());
            for (j, t) in r.targets.iter().enumerate() {
                let tkey = |k: &str| format!("rules[{i}].targets[{j}].{k}");
                if !valid_name(&t.id, 64) {
                    return Err(err(
                        span,
                        tkey("id"),
                        "must be 1–64 characters of [A-Za-z0-9._-]".into(),
                    ));
                }
                if !ids.insert(t.id.clone()) {
                    return Err(err(
                        span,
                        tkey("id"),
                        format!("duplicate target id {:?} in this rule", t.id),
                    ));
                }
                if !target_names.contains(&t.arn) {
                    return Err(err(
                        span,
                        tkey("arn"),
                        format!("no [[targets]] entry named {:?}", t.arn),
                    ));
                }
                if !arns.insert(t.arn.clone()) {
                    return Err(err(
                        span,
                        tkey("arn"),
                        format!("target {:?} is listed twice in this rule", t.arn),
                    ));
                }
                let rp = t.retry_policy;
                if rp.maximum_retry_attempts > 185 {
                    return Err(err(
                        span,
                        tkey("retry_policy.maximum_retry_attempts"),
                        "must be 0–185".into(),
                    ));
                }
                if !(60..=86_400).contains(&rp.maximum_event_age_in_seconds) {
                    return Err(err(
                        span,
                        tkey("retry_policy.maximum_event_age_in_seconds"),
                        "must be 60–86400".into(),
                    ));
                }
                if rp.base_delay_ms == 0 || rp.max_delay_ms < rp.base_delay_ms {
                    return Err(err(
                        span,
                        tkey("retry_policy"),
                        "need 0 < base_delay_ms <= max_delay_ms".into(),
                    ));
                }
                let input = TargetInput::from_aws(
                    t.input.as_deref(),
                    t.input_path.as_deref(),
                    t.input_transformer.as_ref(),
                )
                .map_err(|e| err(span.clone(), tkey("input"), e.to_string()))?;
                if let Some(d) = &t.dead_letter_config {
                    if !config_aws::AWS_BUILT_IN {
                        return Err(err(
                            span,
                            tkey("dead_letter_config"),
                            config_aws::not_built("an SQS dead-letter queue"),
                        ));
                    }
                    if d.arn.ends_with(".fifo") {
                        return Err(err(
                            span,
                            tkey("dead_letter_config.arn"),
                            "a dead-letter queue must be a standard queue (EventBridge refuses FIFO)".into(),
                        ));
                    }
                    if !(d.arn.starts_with("arn:aws") && d.arn.contains(":sqs:")
                        || d.arn.starts_with("https://")
                        || d.arn.starts_with("http://"))
                    {
                        return Err(err(
                            span,
                            tkey("dead_letter_config.arn"),
                            format!("{:?}: expected an SQS queue ARN or URL", d.arn),
                        ));
                    }
                }
                targets.push(ValidRuleTarget {
                    id: t.id.clone(),
                    target: t.arn.clone(),
                    input,
                    retry: rp,
                    dead_letter_queue: t.dead_letter_config.as_ref().map(|d| d.arn.clone()),
                });
            }
            rules.push(ValidRule {
                name: r.name.clone(),
                pattern_json: pattern_json.unwrap_or_else(|| "{}".into()),
                pattern,
                enabled: r.state == RuleState::Enabled,
                targets,
            });
        }
        Ok(LoadedConfig {
            config: self,
            rules,
            origin,
        })
    }
}

const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn validate_aws_target(kind: &TargetKind) -> Result<(), (&'static str, String)> {
    if !config_aws::AWS_BUILT_IN {
        return Err(("type", config_aws::not_built("this target type")));
    }
    match kind {
        TargetKind::Eventbridge(e) => {
            if e.arn.is_empty() {
                return Err(("arn", "needs the event bus name or ARN".into()));
            }
            if !(1..=1024 * 1024).contains(&e.max_request_bytes) {
                return Err((
                    "max_request_bytes",
                    "must be 1–1048576 (AWS's PutEvents limit; 262144 for the old quota)".into(),
                ));
            }
        }
        TargetKind::Sqs(q) => {
            if q.queue.is_empty() {
                return Err(("queue", "needs the queue URL or ARN".into()));
            }
            if !(1..=1024 * 1024).contains(&q.max_message_bytes) {
                return Err(("max_message_bytes", "must be 1–1048576".into()));
            }
            if let Some(t) = &q.message_group_template {
                switchboard_event::template::Template::parse(t)
                    .map(|_| ())
                    .map_err(|m| ("message_group_template", m))?;
            }
        }
        TargetKind::S3(b) => {
            if b.bucket.is_empty() {
                return Err(("bucket", "needs the bucket name".into()));
            }
            if b.layout != "object" && b.layout != "ndjson" {
                return Err((
                    "layout",
                    format!("{:?}: expected \"object\" or \"ndjson\"", b.layout),
                ));
            }
            switchboard_event::template::Template::parse(&b.key_template)
                .map(|_| ())
                .map_err(|m| ("key_template", m))?;
            if b.window_secs == 0 || b.window_secs > 3600 {
                return Err(("window_secs", "must be 1–3600".into()));
            }
        }
        _ => {}
    }
    Ok(())
}

fn validate_http_target(h: &HttpTargetConfig) -> Result<(), (&'static str, String)> {
    let url = reqwest::Url::parse(&h.url).map_err(|e| ("url", format!("{:?}: {e}", h.url)))?;
    match url.scheme() {
        "https" => {}
        "http" if h.allow_insecure_http || is_loopback_host(&url) => {}
        "http" => {
            return Err((
                "url",
                format!(
                    "{:?}: plain http is only allowed to loopback hosts unless allow_insecure_http = true",
                    h.url
                ),
            ));
        }
        other => return Err(("url", format!("{:?}: unsupported scheme {other:?}", h.url))),
    }
    if !(1..=300).contains(&h.timeout_secs) {
        return Err(("timeout_secs", "must be 1–300".into()));
    }
    let need = |value: &Option<String>, env: &Option<String>, what: &'static str| {
        if value.is_none() && env.is_none() {
            Err(("auth", format!("{what} or {what}_env is required")))
        } else {
            Ok(())
        }
    };
    match &h.auth {
        HttpAuth::None => Ok(()),
        HttpAuth::Basic {
            username,
            password,
            password_env,
        } => {
            if username.is_empty() {
                return Err(("auth.username", "must not be empty".into()));
            }
            need(password, password_env, "password")
        }
        HttpAuth::ApiKey {
            header,
            value,
            value_env,
        } => {
            if header.is_empty() {
                return Err(("auth.header", "must not be empty".into()));
            }
            need(value, value_env, "value")
        }
        HttpAuth::Bearer { token, token_env } => need(token, token_env, "token"),
        HttpAuth::Oauth2 {
            token_url,
            client_id,
            client_secret,
            client_secret_env,
            ..
        } => {
            reqwest::Url::parse(token_url)
                .map_err(|e| ("auth.token_url", format!("{token_url:?}: {e}")))?;
            if client_id.is_empty() {
                return Err(("auth.client_id", "must not be empty".into()));
            }
            need(client_secret, client_secret_env, "client_secret")
        }
    }
}

/// True for `localhost`, 127.0.0.0/8 and `::1`.
pub fn is_loopback_host(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Converts a TOML value (an inline pattern) to JSON.
pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// Resolves a source's secrets from config, environment and files (in that order).
pub fn resolve_secrets(auth: &SourceAuth, base_dir: &Path) -> Result<Vec<String>, String> {
    let mut out = auth.secrets.clone();
    if let Some(var) = &auth.secrets_env
        && let Ok(v) = std::env::var(var)
    {
        out.extend(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    for f in &auth.secret_files {
        let p = base_dir.join(f);
        let s =
            read_small(&p, 16 * 1024).map_err(|e| format!("secret file {}: {e}", p.display()))?;
        out.push(s.trim_end_matches(['\r', '\n']).to_string());
    }
    Ok(out)
}

/// Reads a small text file referenced by the configuration, refusing anything that is not a
/// regular file or is larger than `max` bytes (so `/dev/zero` or a FIFO cannot hang or exhaust
/// `config check`; found by reasoning about the `config_parse` fuzz target).
fn read_small(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Reads a secret from a value or an environment variable.
pub fn secret_value(value: &Option<String>, env: &Option<String>) -> Option<String> {
    value
        .clone()
        .or_else(|| env.as_ref().and_then(|e| std::env::var(e).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_config_is_valid() {
        let loaded = Config::builtin();
        assert_eq!(loaded.rules.len(), 1);
        assert_eq!(
            loaded.config.sources[0].get_ref().path.as_deref(),
            Some("/webhooks/genesys")
        );
    }

    fn check_err(text: &str, expect: &[&str]) {
        let e = Config::from_toml(text, "t.toml", PathBuf::from("."))
            .expect_err("must fail")
            .to_string();
        for part in expect {
            assert!(e.contains(part), "{e:?} should contain {part:?}");
        }
    }

    #[test]
    fn commit_linger_is_bounded() {
        check_err(
            "[store]\ncommit_linger_us = 100001\n",
            &["t.toml", "store.commit_linger_us", "at most 100000"],
        );
        let ok = Config::from_toml(
            "[store]\ncommit_linger_us = 0\n",
            "t.toml",
            PathBuf::from("."),
        )
        .expect("0 turns the linger off");
        assert_eq!(ok.config.store.commit_linger_us, 0);
        assert_eq!(Config::builtin().config.store.commit_linger_us, 300);
    }

    #[test]
    fn batch_size_defaults_by_kind_and_is_bounded() {
        let text = "[[targets]]\nname = \"f\"\ntype = \"file\"\npath = \"e.jsonl\"\n\n\
                    [[targets]]\nname = \"o\"\ntype = \"stdout\"\n\n\
                    [[targets]]\nname = \"g\"\ntype = \"file\"\npath = \"g.jsonl\"\nbatch_size = 7\n";
        let loaded = Config::from_toml(text, "t.toml", PathBuf::from(".")).expect("valid");
        let sizes: Vec<usize> = loaded
            .config
            .targets
            .iter()
            .map(|t| t.get_ref().batch_size())
            .collect();
        assert_eq!(sizes, [1000, 64, 7]);
        check_err(
            "[[targets]]\nname = \"f\"\ntype = \"file\"\npath = \"e.jsonl\"\nbatch_size = 0\n",
            &["t.toml", "targets[0].batch_size", "must be 1–1000"],
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        check_err("[server]\nlisten = 5\n", &["t.toml", "line 2", "listen"]);
        check_err("[servr]\n", &["t.toml", "servr"]);
        check_err(
            "[[targets]]\nname = \"a\"\ntype = \"stdout\"\n\n[[rules]]\nname = \"r\"\n[[rules.targets]]\nid = \"x\"\narn = \"nope\"\n",
            &["t.toml:5:", "rules[0].targets[0].arn", "nope"],
        );
        check_err(
            "[[targets]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://example.com/x\"\n",
            &["t.toml:1:", "targets[0].url", "loopback"],
        );
        check_err(
            "[[targets]]\nname = \"a\"\ntype = \"http\"\nurl = \"https://example.com/x\"\nauth = { type = \"basic\", username = \"u\" }\n",
            &["targets[0].auth", "password"],
        );
        check_err(
            "[[targets]]\nname = \"a\"\ntype = \"stdout\"\n[[rules]]\nname = \"r\"\nevent_pattern = { source = [] }\n",
            &[
                "t.toml:4:",
                "rules[0].event_pattern",
                "InvalidEventPatternException",
            ],
        );
        check_err(
            "[[targets]]\nname = \"a\"\ntype = \"stdout\"\n[[rules]]\nname = \"r\"\n[[rules.targets]]\nid = \"x\"\narn = \"a\"\nretry_policy = { maximum_retry_attempts = 186 }\n",
            &["maximum_retry_attempts", "0–185"],
        );
        check_err(
            "[[targets]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\nbogus = 1\n",
            &["bogus"],
        );
        check_err(
            "[[targets]]\nname = \"a\"\ntype = \"http\"\nurl = \"https://x\"\nbogus = 1\n",
            &["bogus"],
        );
        check_err(
            "[[sources]]\nname = \"s\"\npath = \"/metrics\"\nauth = { scheme = \"none\" }\n",
            &["sources[0].path"],
        );
        check_err(
            "[[sources]]\nname = \"s\"\npath = \"/x\"\nauth = { scheme = \"basic\" }\n",
            &["sources[0].auth", "secrets"],
        );
    }

    #[test]
    fn body_limit_is_bounded_below_the_journal_record_limit() {
        check_err(
            "[server]\nmax_body_bytes = 67108865\n",
            &["t.toml", "server.max_body_bytes", "between 1 and 67108864"],
        );
        check_err("[server]\nmax_body_bytes = 0\n", &["server.max_body_bytes"]);
        let ok = Config::from_toml(
            "[server]\nmax_body_bytes = 67108864\n",
            "t.toml",
            PathBuf::from("."),
        )
        .expect("the ceiling itself is allowed");
        assert_eq!(ok.config.server.max_body_bytes, MAX_BODY_BYTES_LIMIT);
    }

    #[test]
    fn referenced_files_must_be_small_regular_files() {
        check_err(
            "[[targets]]\nname = \"a\"\ntype = \"stdout\"\n[[rules]]\nname = \"r\"\nevent_pattern_file = \"/dev/zero\"\n",
            &["rules[0].event_pattern_file", "not a regular file"],
        );
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../switchboard.example.toml");
        let loaded = Config::load(&path).expect("switchboard.example.toml is valid");
        assert!(loaded.rules.len() >= 2);
    }

    #[cfg(feature = "aws")]
    #[test]
    fn aws_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/aws.toml");
        let loaded = Config::load(&path).expect("examples/aws.toml is valid");
        assert_eq!(loaded.config.dedup.backend, DedupBackend::Dynamodb);
        assert_eq!(loaded.config.aws.as_ref().map(|a| a.rules.len()), Some(1));
        assert_eq!(
            loaded.rules[0].targets[0].dead_letter_queue.as_deref(),
            Some("arn:aws:sqs:us-east-1:123456789012:switchboard-bus-dlq")
        );
    }

    #[cfg(feature = "aws")]
    #[test]
    fn aws_settings_are_checked_with_the_key_path() {
        let eb = "[[targets]]\nname = \"b\"\ntype = \"eventbridge\"\narn = \"bus\"\n";
        check_err(
            &format!("{eb}max_request_bytes = 2000000\n"),
            &["targets[0].max_request_bytes", "1048576"],
        );
        check_err(
            "[[targets]]\nname = \"s\"\ntype = \"s3\"\nbucket = \"b\"\nlayout = \"csv\"\n",
            &["targets[0].layout", "ndjson"],
        );
        check_err(
            "[[targets]]\nname = \"s\"\ntype = \"s3\"\nbucket = \"b\"\nkey_template = \"a/{b\"\n",
            &["targets[0].key_template", "unclosed"],
        );
        check_err(
            "[[targets]]\nname = \"s\"\ntype = \"s3\"\nbucket = \"b\"\nkey_template = \"a/{$week}\"\n",
            &["targets[0].key_template", "$week"],
        );
        check_err(
            &format!(
                "{eb}[[rules]]\nname = \"r\"\n[[rules.targets]]\nid = \"b\"\narn = \"b\"\nDeadLetterConfig = {{ Arn = \"arn:aws:sqs:us-east-1:1:d.fifo\" }}\n"
            ),
            &["rules[0].targets[0].dead_letter_config.arn", "FIFO"],
        );
        check_err(
            &format!(
                "{eb}[[rules]]\nname = \"r\"\n[[rules.targets]]\nid = \"b\"\narn = \"b\"\nDeadLetterConfig = {{ Arn = \"my-dlq\" }}\n"
            ),
            &["dead_letter_config.arn", "ARN or URL"],
        );
        check_err(
            "[[sources]]\nname = \"q\"\ntype = \"sqs\"\n",
            &["sources[0].sqs", "queue"],
        );
        check_err(
            "[[sources]]\nname = \"q\"\ntype = \"sqs\"\nsqs = { queue = \"u\", max_messages = 11 }\n",
            &["sources[0].sqs.max_messages", "1–10"],
        );
        check_err(
            "[dedup]\nbackend = \"dynamodb\"\nlease_secs = 0\n",
            &["dedup.table / dedup.lease_secs"],
        );
        check_err(
            "[aws]\naccess_key_id = \"AKIA\"\n",
            &["aws.access_key_id", "secret_access_key"],
        );
        check_err(
            "[aws]\n[[aws.rules]]\nName = \"r\"\nEventPattern = '{\"source\": [{\"bogus\": 1}]}'\n",
            &["aws.rules[0].event_pattern", "InvalidEventPatternException"],
        );
    }

    #[test]
    fn aws_shaped_rules_are_accepted() {
        let text = r#"
[[targets]]
name = "crm"
type = "http"
url = "http://127.0.0.1:9/hook"

[[rules]]
Name = "calls"
EventPattern = '{"detail-type":[{"prefix":"v2.detail.events.conversation"}]}'
[[rules.Targets]]
Id = "t1"
Arn = "crm"
RetryPolicy = { MaximumRetryAttempts = 3, MaximumEventAgeInSeconds = 600 }
InputTransformer = { InputPathsMap = { conv = "$.detail.eventBody.conversationId" }, InputTemplate = '{"c": <conv>}' }
"#;
        let loaded = Config::from_toml(text, "t.toml", PathBuf::from(".")).expect("valid");
        let rule = &loaded.rules[0];
        assert_eq!(rule.targets[0].retry.maximum_retry_attempts, 3);
        assert!(rule.pattern.is_some());
    }
}
