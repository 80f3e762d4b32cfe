//! `switchboard dlq list|show|redrive`, through the admin API.

use std::process::ExitCode;

use clap::Subcommand;

use super::admin_client::AdminArgs;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (newest pages via --page-token).
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue from a previous page.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show one dead letter with its payload and error.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        /// Dead-letter id.
        id: i64,
    },
    /// Move dead letters back to their target queues.
    Redrive {
        #[command(flatten)]
        admin: AdminArgs,
        /// These ids.
        #[arg(long, num_args = 1.., conflicts_with_all = ["all", "from", "to"])]
        id: Vec<i64>,
        /// Everything (optionally of --target).
        #[arg(long)]
        all: bool,
        /// From this time (RFC 3339, inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Until this time (RFC 3339, exclusive).
        #[arg(long)]
        to: Option<String>,
        /// Only this target (with --all or a time range).
        #[arg(long)]
        target: Option<String>,
    },
}

pub fn run(cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        match cmd {
            DlqCommand::List {
                admin,
                target,
                limit,
                page_token,
            } => {
                let mut q = vec![format!("limit={limit}")];
                if let Some(t) = target {
                    q.push(format!("target={}", urlencode(&t)));
                }
                if let Some(p) = page_token {
                    q.push(format!("page_token={}", urlencode(&p)));
                }
                admin.get(&format!("/admin/dlq?{}", q.join("&"))).await
            }
            DlqCommand::Show { admin, id } => admin.get(&format!("/admin/dlq/{id}")).await,
            DlqCommand::Redrive {
                admin,
                id,
                all,
                from,
                to,
                target,
            } => {
                let body = if !id.is_empty() {
                    serde_json::json!({ "ids": id })
                } else if all {
                    serde_json::json!({ "all": true, "target": target })
                } else if from.is_some() || to.is_some() {
                    serde_json::json!({ "from": from, "to": to, "target": target })
                } else {
                    anyhow::bail!("say what to redrive: --id N.., --all, or --from/--to");
                };
                admin.post("/admin/dlq/redrive", body).await
            }
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
