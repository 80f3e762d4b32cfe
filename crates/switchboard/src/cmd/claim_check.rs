//! `switchboard claim-check get URI`: fetch a claim-checked event, optionally verifying its digest.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ClaimCheckCommand {
    /// Print a claim-checked event (`file://…` or `s3://bucket/key`).
    Get {
        /// The URI from the small event's `claimCheck.uri`.
        uri: String,
        /// Configuration whose [aws] section reaches the bucket (s3:// only; default: the
        /// standard AWS chain).
        #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        /// Expected hex SHA-256 (`claimCheck.sha256`); a mismatch fails and prints nothing.
        #[arg(long)]
        sha256: Option<String>,
        /// Write the event to this file instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

pub fn run(cmd: ClaimCheckCommand) -> anyhow::Result<ExitCode> {
    let ClaimCheckCommand::Get {
        uri,
        config,
        sha256,
        output,
    } = cmd;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bytes = rt.block_on(fetch(&uri, config, sha256.as_deref()))?;
    match output {
        Some(path) => {
            std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "aws")]
async fn fetch(
    uri: &str,
    config: Option<PathBuf>,
    sha256: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    // Clients only for s3://: a file:// fetch must not need (or load) AWS settings.
    let clients = if uri.starts_with("s3://") {
        let section = match &config {
            Some(path) => switchboard_gateway::config::Config::load(path)?.config.aws,
            None => None,
        };
        let settings =
            switchboard_gateway::aws_rt::settings(section.as_ref()).map_err(anyhow::Error::msg)?;
        Some(switchboard_aws::AwsClients::new(&settings).await)
    } else {
        None
    };
    switchboard_gateway::claim_check::fetch(uri, sha256, clients.as_ref())
        .await
        .map_err(anyhow::Error::msg)
}

#[cfg(not(feature = "aws"))]
async fn fetch(
    uri: &str,
    _config: Option<PathBuf>,
    sha256: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    switchboard_gateway::claim_check::fetch(uri, sha256)
        .await
        .map_err(anyhow::Error::msg)
}
