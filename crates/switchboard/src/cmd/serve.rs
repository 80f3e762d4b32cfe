//! `switchboard serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use switchboard_gateway::config::{Config, LogFormat};
use switchboard_gateway::{Gateway, Overrides};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without one the built-in zero-config setup runs.
    #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory (overrides server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log as JSON lines (overrides log.format).
    #[arg(long)]
    log_json: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let loaded = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::builtin(),
    };
    init_logging(
        if args.log_json {
            LogFormat::Json
        } else {
            loaded.config.log.format
        },
        &loaded.config.log.level,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let gw = Gateway::start(
            loaded,
            Overrides {
                listen: args.listen,
                data_dir: args.data_dir,
            },
        )
        .await?;
        let addr = gw.local_addr();
        for g in &gw.generated_secrets {
            // Printed once, on the start that created it; afterwards it lives only in the file.
            println!(
                "Generated a webhook secret for source {:?} (kept in {}, mode 0600):",
                g.source,
                g.file.display()
            );
            println!("  {}", g.secret);
            println!("Send the built-in Genesys sample events with:");
            println!(
                "  switchboard send --url http://{addr}{} --secret='{}'",
                g.path, g.secret
            );
        }
        // Machine-readable readiness line for scripts and tests.
        println!("listening on {addr}");
        wait_for_signal().await;
        tracing::info!("shutting down");
        gw.shutdown().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
