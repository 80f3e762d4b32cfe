//! The gateway's AWS runtime: clients built once from `[aws]`, queue URLs resolved once, the
//! shared DynamoDB dedup, and the SQS dead-letter writer.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use switchboard_aws::dynamo::DynamoDedup;
use switchboard_aws::{AwsClients, AwsSettings};
use tokio::sync::Mutex;

use crate::config::{AwsSection, Config, DedupBackend, TargetKind};

/// Clients and caches shared by every AWS target and source.
#[derive(Debug)]
pub struct AwsRuntime {
    /// The clients.
    pub clients: AwsClients,
    urls: Mutex<HashMap<String, String>>,
}

/// Whether anything in the configuration talks to AWS.
pub fn needed(cfg: &Config) -> bool {
    cfg.aws.is_some()
        || cfg.dedup.backend == DedupBackend::Dynamodb
        || cfg.sources.iter().any(|s| s.get_ref().sqs.is_some())
        || cfg.targets.iter().any(|t| {
            let t = t.get_ref();
            matches!(
                t.kind,
                TargetKind::Eventbridge(_) | TargetKind::Sqs(_) | TargetKind::S3(_)
            ) || t
                .claim_check
                .as_ref()
                .is_some_and(|c| c.store.starts_with("s3://"))
        })
        || cfg.rules.iter().any(|r| {
            r.get_ref()
                .targets
                .iter()
                .any(|t| t.dead_letter_config.is_some())
        })
}

/// The SDK settings of an `[aws]` section (absent = the standard chain for everything).
pub fn settings(section: Option<&AwsSection>) -> Result<AwsSettings, String> {
    let mut s = AwsSettings::new();
    let Some(a) = section else {
        return Ok(s);
    };
    s.region = a.region.clone();
    s.endpoint_url = a.endpoint_url.clone();
    s.endpoints = a.endpoints.clone();
    s.attempt_timeout = Duration::from_secs(a.timeout_secs);
    s.sdk_max_attempts = a.sdk_max_attempts;
    if let Some(id) = &a.access_key_id {
        let secret = match (&a.secret_access_key, &a.secret_access_key_env) {
            (Some(v), _) => v.clone(),
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("aws.secret_access_key_env: ${var} is not set"))?,
            (None, None) => return Err("aws.access_key_id without a secret".into()),
        };
        s.static_credentials = Some((id.clone(), secret));
    }
    Ok(s)
}

impl AwsRuntime {
    /// Builds the clients (no network call).
    pub async fn new(section: Option<&AwsSection>) -> Result<Self, String> {
        let settings = settings(section)?;
        Ok(AwsRuntime {
            clients: AwsClients::new(&settings).await,
            urls: Mutex::new(HashMap::new()),
        })
    }

    /// A queue's URL from its URL or ARN, looked up once.
    pub async fn queue_url(&self, queue: &str) -> Result<String, String> {
        if let Some(u) = self.urls.lock().await.get(queue) {
            return Ok(u.clone());
        }
        let url = switchboard_aws::sqs::queue_url(&self.clients.sqs, queue)
            .await
            .map_err(|e| e.to_string())?;
        self.urls.lock().await.insert(queue.to_owned(), url.clone());
        Ok(url)
    }
}

/// The owner token of this replica: configured, or generated once and kept in the data dir so a
/// restarted replica re-claims the keys it claimed before crashing.
pub fn replica_owner(data_dir: &Path, configured: Option<&str>) -> std::io::Result<String> {
    if let Some(o) = configured {
        return Ok(o.to_owned());
    }
    let path = data_dir.join("replica-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = data_dir.join("replica-id.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(id.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// The shared dedup of a replica.
#[derive(Debug, Clone)]
pub struct SharedDedup {
    /// The table.
    pub table: DynamoDedup,
}
