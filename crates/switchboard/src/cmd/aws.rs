//! `switchboard aws plan|apply`: the AWS resources a configuration needs, as code.
//!
//! The desired state is derived from the gateway configuration itself ([`spec_from_config`]), so
//! the queues, buckets and table the gateway will use are exactly the ones provisioned.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use switchboard_aws::AwsClients;
use switchboard_aws::provision::{
    self, BusSpec, ProvisionSpec, RuleSpec, TargetSpec, TransformerSpec,
};
use switchboard_gateway::config::{Config, DedupBackend, RuleConfig, RuleState, TargetKind};

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Show what `apply` would create or update on AWS; changes nothing.
    Plan {
        /// Gateway configuration file ([aws], [dedup], targets, sources, rules).
        #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
        config: PathBuf,
        /// Exit 2 when changes are pending, 0 when up to date (1 on errors), like terraform.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Create missing queues, buckets, the dedup table, the bus, rules and targets; update what
    /// differs. Deletes nothing but rule targets the rule no longer lists.
    Apply {
        /// Gateway configuration file ([aws], [dedup], targets, sources, rules).
        #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
        config: PathBuf,
    },
}

pub fn run(cmd: AwsCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            AwsCommand::Plan {
                config,
                detailed_exitcode,
            } => {
                let (clients, spec) = load(&config).await?;
                let plan = provision::plan(&clients, &spec).await?;
                println!(
                    "AWS region {}:",
                    clients.region.as_deref().unwrap_or("(default)")
                );
                println!("{plan}");
                Ok(if detailed_exitcode && plan.has_changes() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                })
            }
            AwsCommand::Apply { config } => {
                let (clients, spec) = load(&config).await?;
                let done = provision::apply(&clients, &spec).await?;
                if done.is_empty() {
                    println!("no changes: AWS resources are up to date");
                }
                for ch in &done {
                    println!("changed: {ch}");
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn load(path: &std::path::Path) -> anyhow::Result<(AwsClients, ProvisionSpec)> {
    let loaded = Config::load(path)?;
    let spec = spec_from_config(&loaded.config)?;
    let settings = switchboard_gateway::aws_rt::settings(loaded.config.aws.as_ref())
        .map_err(anyhow::Error::msg)?;
    Ok((AwsClients::new(&settings).await, spec))
}

/// The AWS resources a configuration uses:
/// - the bus and rules of `[aws]`;
/// - the dedup table when `[dedup].backend = "dynamodb"`;
/// - queues: `[aws].queues`, dead-letter queues of every rule target (`[[rules]]` and
///   `[[aws.rules]]`), SQS targets of `[[aws.rules]]` in this region, `sqs` targets, and `sqs`
///   sources with their dead-letter queues;
/// - buckets: `[aws].buckets`, `s3` targets and `s3://` claim-check stores.
pub fn spec_from_config(cfg: &Config) -> anyhow::Result<ProvisionSpec> {
    let mut spec = ProvisionSpec::default();
    let region = cfg.aws.as_ref().and_then(|a| a.region.as_deref());
    if let Some(aws) = &cfg.aws {
        spec.bus = aws.bus.as_ref().map(|b| BusSpec {
            name: b.name.clone(),
            event_source_name: b.event_source_name.clone(),
        });
        for r in &aws.rules {
            spec.rules.push(rule_spec(r)?);
            // Queues a managed rule sends to: ours to create when they are in our region (the
            // account cannot be checked without an STS call; the region can).
            for t in &r.targets {
                if let Some(a) = switchboard_aws::parse_arn(&t.arn)
                    && a.service == "sqs"
                    && region.is_none_or(|reg| reg == a.region)
                {
                    spec.queues.push(a.resource.to_owned());
                }
                if let Some(d) = &t.dead_letter_config {
                    spec.queues.push(queue_name(&d.arn)?);
                }
            }
        }
        spec.queues.extend(aws.queues.iter().cloned());
        spec.buckets.extend(aws.buckets.iter().cloned());
    }
    if cfg.dedup.backend == DedupBackend::Dynamodb {
        spec.dedup_table = Some(cfg.dedup.table.clone());
    }
    for r in &cfg.rules {
        for t in &r.get_ref().targets {
            if let Some(d) = &t.dead_letter_config {
                spec.queues.push(queue_name(&d.arn)?);
            }
        }
    }
    for t in &cfg.targets {
        let t = t.get_ref();
        match &t.kind {
            TargetKind::Sqs(q) => spec.queues.push(queue_name(&q.queue)?),
            TargetKind::S3(b) => spec.buckets.push(b.bucket.clone()),
            _ => {}
        }
        if let Some(store) = t
            .claim_check
            .as_ref()
            .and_then(|c| c.store.strip_prefix("s3://"))
        {
            let bucket = store.split('/').next().unwrap_or("");
            if bucket.is_empty() {
                anyhow::bail!(
                    "target {}: claim_check.store {store:?} names no bucket",
                    t.name
                );
            }
            spec.buckets.push(bucket.to_owned());
        }
    }
    for s in &cfg.sources {
        if let Some(sqs) = &s.get_ref().sqs {
            spec.queues.push(queue_name(&sqs.queue)?);
            if let Some(dlq) = &sqs.dead_letter_queue {
                spec.queues.push(queue_name(dlq)?);
            }
        }
    }
    // Order matters for a readable plan, duplicates do not: keep the first mention.
    dedup(&mut spec.queues);
    dedup(&mut spec.buckets);
    Ok(spec)
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
}

fn queue_name(q: &str) -> anyhow::Result<String> {
    Ok(provision::queue_name(q)?)
}

fn rule_spec(r: &RuleConfig) -> anyhow::Result<RuleSpec> {
    let pattern = r
        .event_pattern
        .as_ref()
        .with_context(|| format!("aws rule {}: an AWS rule needs an event pattern", r.name))?;
    // A TOML string holds the pattern as JSON text (as the aws CLI prints it); a table is the
    // pattern itself.
    let json = match switchboard_gateway::config::toml_to_json(pattern) {
        serde_json::Value::String(s) => s,
        v => v.to_string(),
    };
    Ok(RuleSpec {
        name: r.name.clone(),
        description: r.description.clone(),
        state_enabled: r.state == RuleState::Enabled,
        event_pattern_json: json,
        targets: r
            .targets
            .iter()
            .map(|t| TargetSpec {
                id: t.id.clone(),
                arn: t.arn.clone(),
                input: t.input.clone(),
                input_path: t.input_path.clone(),
                input_transformer: t.input_transformer.as_ref().map(|i| TransformerSpec {
                    paths_map: i.input_paths_map.clone(),
                    template: i.input_template.clone(),
                }),
                retry_policy: Some((
                    t.retry_policy.maximum_retry_attempts,
                    t.retry_policy.maximum_event_age_in_seconds,
                )),
                dead_letter_arn: t.dead_letter_config.as_ref().map(|d| d.arn.clone()),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml: &str) -> ProvisionSpec {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.toml");
        std::fs::write(&path, toml).unwrap();
        spec_from_config(&Config::load(&path).unwrap().config).unwrap()
    }

    #[test]
    fn a_configuration_names_every_aws_resource_it_uses() {
        let s = spec(
            r#"
[aws]
region = "us-east-1"
queues = ["extra.fifo"]
buckets = ["extra-bucket"]
[aws.bus]
name = "genesys"
[[aws.rules]]
name = "r1"
event_pattern = '{"source":["genesys.cloud"]}'
[[aws.rules.targets]]
id = "t1"
arn = "arn:aws:sqs:us-east-1:123456789012:rule-q"
dead_letter_config = { arn = "arn:aws:sqs:us-east-1:123456789012:rule-dlq" }
retry_policy = { maximum_retry_attempts = 4, maximum_event_age_in_seconds = 900 }
[[aws.rules.targets]]
id = "t2"
arn = "arn:aws:sqs:eu-west-1:123456789012:elsewhere"
[[aws.rules]]
name = "r2"
state = "DISABLED"
event_pattern = { detail-type = [{ prefix = "v2.users." }] }

[dedup]
backend = "dynamodb"
table = "sb-dedup"

[[targets]]
name = "q"
type = "sqs"
queue = "https://sqs.us-east-1.amazonaws.com/123456789012/target-q"
[[targets]]
name = "s3"
type = "s3"
bucket = "archive"
claim_check = { store = "s3://claims/big/" }

[[rules]]
name = "all"
event_pattern = { source = ["genesys.cloud"] }
[[rules.targets]]
id = "q"
arn = "q"
dead_letter_config = { arn = "arn:aws:sqs:us-east-1:123456789012:gw-dlq" }
"#,
        );
        assert_eq!(
            s.bus,
            Some(BusSpec {
                name: "genesys".into(),
                event_source_name: None
            })
        );
        assert_eq!(s.dedup_table.as_deref(), Some("sb-dedup"));
        assert_eq!(
            s.queues,
            ["rule-q", "rule-dlq", "extra.fifo", "gw-dlq", "target-q"].map(String::from)
        );
        assert_eq!(
            s.buckets,
            ["extra-bucket", "archive", "claims"].map(String::from)
        );
        assert_eq!(s.rules.len(), 2);
        let r1 = &s.rules[0];
        assert!(r1.state_enabled);
        assert_eq!(r1.event_pattern_json, r#"{"source":["genesys.cloud"]}"#);
        assert_eq!(r1.targets[0].retry_policy, Some((4, 900)));
        assert_eq!(
            r1.targets[0].dead_letter_arn.as_deref(),
            Some("arn:aws:sqs:us-east-1:123456789012:rule-dlq")
        );
        let r2 = &s.rules[1];
        assert!(!r2.state_enabled);
        let p: serde_json::Value = serde_json::from_str(&r2.event_pattern_json).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"detail-type": [{"prefix": "v2.users."}]})
        );
    }

    #[test]
    fn a_configuration_without_aws_needs_nothing() {
        let s = spec("[server]\nlisten = \"127.0.0.1:0\"\n");
        assert_eq!(s, ProvisionSpec::default());
    }
}
