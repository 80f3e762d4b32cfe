//! `switchboard genesys …`: the Genesys side as code, and the live state of notification sources.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use switchboard_gateway::config::{Config, LoadedConfig};
use switchboard_genesys::provision::{self, ApplyOptions};

use super::admin_client::AdminArgs;

#[derive(Debug, Subcommand)]
pub enum GenesysCommand {
    /// Show what `apply` would change in the Amazon EventBridge integration; changes nothing.
    Plan {
        /// Configuration file with [genesys] and [genesys.eventbridge].
        #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
        config: PathBuf,
    },
    /// Create or update the integration, enable it and wait for ACTIVE; audited.
    Apply {
        /// Configuration file with [genesys] and [genesys.eventbridge].
        #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
        config: PathBuf,
        /// Give up waiting for ACTIVE after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// The org, region and token expiry the configured client sees.
    Whoami {
        #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
        config: PathBuf,
    },
    /// Available notification topics with their transports.
    Topics {
        #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
        config: PathBuf,
        /// Only topics containing this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Notification channels of the OAuth client, as Genesys lists them.
    Channels {
        #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
        config: PathBuf,
    },
    /// Gaps, losses and channels of the running gateway's notification sources (admin API).
    Gaps {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn client(loaded: &LoadedConfig) -> anyhow::Result<switchboard_genesys::Client> {
    let g = loaded
        .config
        .genesys
        .as_ref()
        .context("the configuration has no [genesys] section")?;
    let cfg = g.client_config().map_err(anyhow::Error::msg)?;
    Ok(switchboard_genesys::Client::new(cfg)?)
}

pub fn run(cmd: GenesysCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            GenesysCommand::Plan { config } => {
                let loaded = Config::load(&config)?;
                let spec = eventbridge_spec(&loaded)?;
                let plan = provision::plan(&client(&loaded)?, &spec).await?;
                println!("{plan}");
            }
            GenesysCommand::Apply {
                config,
                timeout_secs,
            } => {
                let loaded = Config::load(&config)?;
                let spec = eventbridge_spec(&loaded)?;
                let c = client(&loaded)?;
                let mut entries = Vec::new();
                let options = ApplyOptions {
                    timeout: std::time::Duration::from_secs(timeout_secs),
                    ..ApplyOptions::default()
                };
                let result = provision::apply(&c, &spec, &options, &mut |e| entries.push(e)).await;
                // Audit what was changed even when a later step failed.
                audit(&loaded, &entries).await?;
                let report = result?;
                if report.changes.is_empty() {
                    println!(
                        "no changes: integration {} is up to date",
                        report.integration_id
                    );
                } else {
                    for ch in &report.changes {
                        println!("changed: {}", serde_json::to_string(ch)?);
                    }
                }
                println!(
                    "reported state: {}",
                    report.reported_state.as_deref().unwrap_or("unknown")
                );
                println!("partner event source: {}", report.partner_event_source);
                println!("{}", report.aws_next_steps);
            }
            GenesysCommand::Whoami { config } => {
                let me = client(&Config::load(&config)?)?.whoami().await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "org_id": me.org_id,
                        "org_name": me.org_name,
                        "region": me.region,
                        "api_base_url": me.api_base_url,
                        "token_expires_at": me.token_expires_at.to_string(),
                    }))?
                );
            }
            GenesysCommand::Topics { config, filter } => {
                let topics =
                    provision::topics(&client(&Config::load(&config)?)?, filter.as_deref()).await?;
                println!("{}", serde_json::to_string_pretty(&topics)?);
            }
            GenesysCommand::Channels { config } => {
                let chans = switchboard_genesys::notifications::list_channels(&client(
                    &Config::load(&config)?,
                )?)
                .await?;
                println!("{}", serde_json::to_string_pretty(&chans)?);
            }
            GenesysCommand::Gaps { admin } => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&admin.get("/admin/genesys").await?)?
                );
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn eventbridge_spec(loaded: &LoadedConfig) -> anyhow::Result<provision::EventBridgeSpec> {
    match loaded
        .config
        .genesys
        .as_ref()
        .and_then(|g| g.eventbridge.clone())
    {
        Some(s) => Ok(s),
        None => bail!("the configuration has no [genesys.eventbridge] section"),
    }
}

/// Appends the changes to the gateway's audit log in its data directory.
async fn audit(loaded: &LoadedConfig, entries: &[provision::AuditEntry]) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let dir = &loaded.config.server.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let store = switchboard_store::Store::open(dir, switchboard_store::StoreOptions::default())
        .with_context(|| format!("opening the store in {} for the audit log", dir.display()))?;
    for e in entries {
        store
            .append_audit(
                "switchboard genesys apply".into(),
                e.action.to_string(),
                serde_json::json!({"integration_id": e.integration_id, "name": e.name, "detail": e.detail}),
            )
            .await?;
    }
    store.close().await?;
    Ok(())
}
