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
    #[cfg(target_os = "linux")]
    reserve_descriptors(
        loaded
            .config
            .server
            .max_connections
            .saturating_add(loaded.config.server.max_pending_connections)
            .saturating_add(RESERVED_FOR_FILES),
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

/// Descriptors beyond the listener's connections: the store's segments and indexes, target
/// files, client sockets to targets and sources.
#[cfg(target_os = "linux")]
const RESERVED_FOR_FILES: usize = 512;

/// Makes room in the descriptor table now for `n` descriptors, raising the soft open-files limit
/// toward the hard one if it is lower (as Go's runtime does), and warns if `n` still does not fit.
///
/// The kernel grows a process's descriptor table by doubling it, and in a process with threads
/// each growth waits for an RCU grace period (`synchronize_rcu`), milliseconds or more in a VM,
/// with the thread that accepted blocked: on one core, the only tokio worker. A burst of new
/// connections (a sender that opens more while the server is slow) grows it several times in a
/// row, just when a stall costs most (BENCHMARKS.md, "the descriptor table is sized at start").
/// Grown once here, before the runtime's threads exist, it never shrinks. Best effort: if it
/// fails, the table grows later as it would have.
#[cfg(target_os = "linux")]
fn reserve_descriptors(n: usize) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let want = u64::try_from(n).unwrap_or(u64::MAX);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if let Some(soft) = raised_soft_limit(limit.rlim_cur, limit.rlim_max, want) {
        let raised = libc::rlimit {
            rlim_cur: soft,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads only the struct it is given; lowering nothing, it cannot fail
        // for want of privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        }
    }
    if limit.rlim_cur < want {
        tracing::warn!(
            open_files_limit = limit.rlim_cur,
            needed = want,
            "the open-files limit is below max_connections + max_pending_connections + {RESERVED_FOR_FILES}; \
             connections beyond it will be refused by the kernel (raise `ulimit -n` or lower the limits)"
        );
    }
    let Ok(probe) = std::fs::File::open("/dev/null") else {
        return;
    };
    let highest = want.min(limit.rlim_cur.saturating_sub(1));
    let Ok(highest) = libc::c_int::try_from(highest) else {
        return;
    };
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own onto the lowest free number at or
    // above `highest`, which makes the kernel size the table for it; nothing else is touched.
    let fd = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_DUPFD_CLOEXEC, highest) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by fcntl and nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// The soft open-files limit to set so that `want` descriptors fit, if it must rise: toward
/// `want`, never past the hard limit, never lower than it is.
#[cfg(target_os = "linux")]
fn raised_soft_limit(soft: u64, hard: u64, want: u64) -> Option<u64> {
    (soft < want && soft < hard).then(|| want.min(hard))
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{raised_soft_limit, reserve_descriptors};

    /// Slots in this process's descriptor table (`FDSize` in `/proc/self/status`).
    fn table_size() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn the_soft_limit_rises_toward_what_is_needed_and_never_past_the_hard_one() {
        assert_eq!(raised_soft_limit(256, 1 << 20, 17_920), Some(17_920));
        assert_eq!(raised_soft_limit(1024, 4096, 17_920), Some(4096));
        // Already enough, or already at the hard limit: left alone.
        assert_eq!(raised_soft_limit(65_536, 1 << 20, 17_920), None);
        assert_eq!(raised_soft_limit(4096, 4096, 17_920), None);
    }

    #[test]
    fn reserving_descriptors_sizes_the_table_and_leaves_nothing_open() {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into the struct it is given.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        let before = table_size();
        // Within the current soft limit, so the test never changes the process's limits (other
        // tests run in this process at the same time).
        let want = (before * 4).min(limit.rlim_cur.saturating_sub(1));
        if want <= before {
            eprintln!("open-files limit {} leaves no room to grow", limit.rlim_cur);
            return;
        }
        reserve_descriptors(usize::try_from(want).unwrap());
        assert!(
            table_size() > want,
            "table {} after reserving {want}",
            table_size()
        );
        // The descriptor that sized it is closed again.
        // SAFETY: F_GETFD only asks about a descriptor number.
        let flags = unsafe { libc::fcntl(libc::c_int::try_from(want).unwrap(), libc::F_GETFD) };
        assert_eq!(flags, -1, "descriptor {want} left open");
    }
}
