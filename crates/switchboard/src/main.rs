//! `switchboard`: the command-line entry point. Parses flags, calls the command, maps errors to
//! exit codes; everything else lives in the library crates.

mod cmd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Opts this process out of transparent huge pages unless `SWITCHBOARD_THP=1`.
///
/// With THP, mimalloc's fresh pages fault in as 2 MiB pages that the kernel zeroes whole: 4-5 %
/// of the ingest CPU in the open-loop benchmark (BENCHMARKS.md), paid in bursts that show up as
/// latency. Latency-sensitive servers (Redis, MongoDB) recommend the same.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("SWITCHBOARD_THP").is_none_or(|v| v != "1") {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours; it only
        // sets a flag on this process's memory map. Failure (old kernel) is harmless.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}
