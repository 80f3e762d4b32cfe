//! The ingest writer's scheduling policy. A test binary of its own: it looks at every thread of
//! the process, and no other test's store may be starting one meanwhile.
#![cfg(target_os = "linux")]

mod common;

use common::{ev, open};
use switchboard_store::IngestOutcome;

/// Threads of this process with the given name, as thread ids.
fn threads_named(name: &str) -> Vec<libc::pid_t> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim_end() == name)
                .then(|| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .flatten()
        })
        .collect()
}

#[tokio::test]
async fn the_ingest_writer_runs_as_sched_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // Answered by the writer, so it has set its policy by now (first thing it does).
    let out = s.ingest(ev("e1", None, 100, &["a"])).await.unwrap();
    assert_eq!(out, IngestOutcome::Stored);
    let writers = threads_named("sb-store-ingest");
    assert_eq!(writers.len(), 1, "one writer thread: {writers:?}");
    // SAFETY: sched_getscheduler only reads the policy of the thread id it is given.
    let policy = unsafe { libc::sched_getscheduler(writers[0]) };
    assert_eq!(policy, libc::SCHED_BATCH, "policy {policy}");
    // Other threads keep the ordinary policy.
    // SAFETY: as above, for this (test) thread.
    assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    s.close().await.unwrap();
}
