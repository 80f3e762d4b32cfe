//! `switchboard replay`: send stored events of a time range through the current rules again.

use std::process::ExitCode;

use clap::Args;

use super::admin_client::AdminArgs;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Start of the range (RFC 3339, inclusive).
    #[arg(long)]
    from: String,
    /// End of the range (RFC 3339, exclusive).
    #[arg(long)]
    to: String,
    /// Only this rule (repeatable).
    #[arg(long = "rule")]
    rules: Vec<String>,
    /// Only this target (repeatable).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// `replay-name` put on every replayed event (default: generated).
    #[arg(long)]
    name: Option<String>,
    /// Most events this call replays (default 100,000).
    #[arg(long)]
    limit: Option<usize>,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = serde_json::json!({
        "from": args.from, "to": args.to, "rules": args.rules, "targets": args.targets,
        "name": args.name, "limit": args.limit,
    });
    let out = rt.block_on(args.admin.post("/admin/replay", body))?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
