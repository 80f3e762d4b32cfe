//! The store's API end to end on a real file in a temp dir.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use common::{ev, open};
use switchboard_store::{
    DeadLetterInfo, Delivery, DeliveryId, DlqFilter, IngestOutcome, NewDelivery, RedriveSelector,
    Store, StoreError, StoreOptions, StoreTuning,
};

/// Polls a future once: enough to make `ingest` enqueue its command (its `try_send` runs on
/// the first poll) without waiting for the answer. No sleeps, no scheduler assumptions.
fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

fn dl(code: &str) -> DeadLetterInfo {
    DeadLetterInfo {
        error_code: code.into(),
        error_message: format!("{code} happened"),
        exhausted_condition: Some("MaximumRetryAttempts".into()),
        retry_attempts: 3,
    }
}

#[tokio::test]
async fn ingest_due_complete() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let out = s.ingest(ev("e1", None, 100, &["a", "b"])).await.unwrap();
    assert_eq!(out, IngestOutcome::Stored);
    assert!(s.due("a", 99, 10).await.unwrap().is_empty());
    let due = s.due("a", 100, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let d = &due[0];
    assert_eq!(
        (d.event_id.as_str(), d.target.as_str(), d.rule.as_str()),
        ("e1", "a", "rule-a")
    );
    assert_eq!(d.payload, r#"{"id":"e1","to":"a"}"#);
    assert_eq!(
        (d.attempts, d.enqueued_at_ms, d.next_attempt_at_ms),
        (0, 100, 100)
    );
    assert_eq!(s.next_due_at("a").await.unwrap(), Some(100));
    let depths = s.queue_depths().await.unwrap();
    assert_eq!(depths.get("a"), Some(&1));
    assert_eq!(depths.get("b"), Some(&1));
    assert_eq!(s.due("a", 100, 0).await.unwrap(), vec![]);

    // A read, not a take: the delivery is due until it is completed.
    assert_eq!(s.due("a", 100, 10).await.unwrap(), due);
    s.complete("a", vec![d.id]).await.unwrap();
    assert!(s.due("a", i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(s.next_due_at("a").await.unwrap(), None);
    assert_eq!(s.due("b", 100, 10).await.unwrap().len(), 1);
    assert_eq!(s.queue_depths().await.unwrap().get("a"), None);
    // Completing again is harmless.
    s.complete("a", vec![d.id]).await.unwrap();

    let stored = s.get_event("e1").await.unwrap().unwrap();
    assert_eq!(stored.envelope, r#"{"id":"e1","detail":{}}"#);
    assert_eq!(stored.received_at_ms, 100);
    assert!(s.get_event("nope").await.unwrap().is_none());
    s.close().await.unwrap();
}

#[tokio::test]
async fn events_between_pages_by_time_and_enqueue_adds_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // Two events share a timestamp: the cursor must not skip or repeat either.
    for (id, at) in [
        ("e1", 100),
        ("e2", 200),
        ("e3", 200),
        ("e4", 300),
        ("e5", 400),
    ] {
        s.ingest(ev(id, None, at, &[])).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.events_between(200, 400, after, 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.seq);
        seen.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(
        seen,
        ["e2", "e3", "e4"],
        "[from, to), oldest first, each once"
    );

    s.enqueue(
        vec![(
            "e2".into(),
            NewDelivery {
                target: "t".into(),
                rule: "r".into(),
                payload: Some("{}".into()),
            },
        )],
        500,
    )
    .await
    .unwrap();
    let due = s.due("t", 500, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].event_id.as_str(), due[0].attempts), ("e2", 0));
    assert_eq!(
        s.table_counts().await.unwrap()["events"],
        5,
        "no new event rows"
    );
    s.enqueue(Vec::new(), 500).await.unwrap();
    s.close().await.unwrap();
}

/// A write queued after the writer took the one before it still shares that one's commit when
/// the writer lingers. Without the linger it cannot: the first batch was already formed. The
/// test waits (polling a counter, no timer) until the writer has taken the first write, then
/// queues the second within the linger: 100 ms, the longest accepted. A loaded machine can keep
/// this thread off the CPU longer than that, so the experiment gets up to five tries; without the
/// linger every try takes two commits.
#[tokio::test]
async fn a_lingering_writer_commits_sparse_writes_together() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = |commit_linger_us| StoreTuning {
        commit_linger_us,
        ..StoreTuning::default()
    };
    assert!(matches!(
        Store::open_tuned(dir.path(), StoreOptions::default(), tuning(100_001)),
        Err(StoreError::InvalidOptions(m)) if m.contains("commit_linger_us")
    ));
    let s = Store::open_tuned(dir.path(), StoreOptions::default(), tuning(100_000)).unwrap();
    let mut commits = Vec::new();
    for n in 0..5 {
        let (before, taken) = (s.commit_count(), s.test_batches_taken());
        let (e1, e2) = (format!("e{n}a"), format!("e{n}b"));
        let (k1, k2) = (format!("k{n}a"), format!("k{n}b"));
        let mut a = Box::pin(s.ingest(ev(&e1, Some(&k1), 100, &["t"])));
        let mut b = Box::pin(s.ingest(ev(&e2, Some(&k2), 100, &["t"])));
        assert!(poll_once(a.as_mut()).is_pending());
        while s.test_batches_taken() == taken {
            tokio::task::yield_now().await;
        }
        assert!(poll_once(b.as_mut()).is_pending());
        assert_eq!(a.await.unwrap(), IngestOutcome::Stored);
        assert_eq!(b.await.unwrap(), IngestOutcome::Stored);
        commits.push(s.commit_count() - before);
        if commits.last() == Some(&1) {
            break;
        }
    }
    assert_eq!(
        commits.last(),
        Some(&1),
        "one commit for both writes: {commits:?}"
    );
    s.close().await.unwrap();
}

/// `poll_queue` is `due` plus "when to look again": the time of the earliest delivery not yet
/// due, or "more now" when the limit cut the batch.
#[tokio::test]
async fn poll_queue_says_when_to_look_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let empty = s.poll_queue("t", 1_000, 10).await.unwrap();
    assert_eq!(
        (empty.due.len(), empty.more_due, empty.next_due_at),
        (0, false, None)
    );
    for (i, at) in [(1, 100), (2, 200), (3, 300)] {
        s.ingest(ev(&format!("e{i}"), None, at, &["t"]))
            .await
            .unwrap();
    }
    let first = s.poll_queue("t", 250, 10).await.unwrap();
    assert_eq!(first.due.len(), 2);
    assert_eq!((first.more_due, first.next_due_at), (false, Some(300)));
    // A delivery due exactly now is due, not "next".
    let at_300 = s.poll_queue("t", 300, 10).await.unwrap();
    assert_eq!((at_300.due.len(), at_300.next_due_at), (3, None));
    let cut = s.poll_queue("t", 250, 2).await.unwrap();
    assert_eq!(
        (cut.due.len(), cut.more_due, cut.next_due_at),
        (2, true, None)
    );
    // A rescheduled delivery moves out of `due` and into `next_due_at`.
    s.reschedule(&first.due[0], 1, 5_000, "HTTP 503".into())
        .await
        .unwrap();
    let after = s.poll_queue("t", 1_000, 10).await.unwrap();
    assert_eq!(after.due.len(), 2);
    assert_eq!((after.more_due, after.next_due_at), (false, Some(5_000)));
    s.close().await.unwrap();
}

fn queued(seq: i64) -> Delivery {
    Delivery {
        id: DeliveryId::Queued(seq),
        event_id: "x".into(),
        target: "t".into(),
        rule: "r".into(),
        payload: "{}".into(),
        attempts: 0,
        enqueued_at_ms: 0,
        next_attempt_at_ms: 0,
    }
}

/// First attempts come in journal order; a rescheduled one moves to the `deliveries` table,
/// where retries are due by time and come before first attempts.
#[tokio::test]
async fn reschedule_and_due_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for (i, at) in [(1, 300), (2, 100), (3, 200)] {
        s.ingest(ev(&format!("e{i}"), None, at, &["t"]))
            .await
            .unwrap();
    }
    let ids = |v: &[Delivery]| v.iter().map(|d| d.event_id.clone()).collect::<Vec<_>>();
    let due = s.due("t", 1_000, 10).await.unwrap();
    assert_eq!(ids(&due), ["e1", "e2", "e3"]);
    assert_eq!(ids(&s.due("t", 1_000, 2).await.unwrap()), ["e1", "e2"]);

    s.reschedule(&due[1], 1, 5_000, "HTTP 503".into())
        .await
        .unwrap();
    assert_eq!(ids(&s.due("t", 1_000, 10).await.unwrap()), ["e1", "e3"]);
    let later = s.due("t", 5_000, 10).await.unwrap();
    assert_eq!(ids(&later), ["e2", "e1", "e3"]);
    assert!(matches!(later[0].id, DeliveryId::Queued(_)));
    assert_eq!((later[0].attempts, later[0].next_attempt_at_ms), (1, 5_000));
    assert_eq!(
        later[0].enqueued_at_ms, 100,
        "a retry keeps its enqueue time"
    );
    assert_eq!(s.next_due_at("t").await.unwrap(), Some(300));
    assert_eq!(s.queue_depths().await.unwrap()["t"], 3);

    // A retry that fails again is rescheduled in place.
    s.reschedule(&later[0], 2, 6_000, "HTTP 503".into())
        .await
        .unwrap();
    let again = s.due("t", 6_000, 10).await.unwrap();
    assert_eq!((again[0].id, again[0].attempts), (later[0].id, 2));

    assert!(matches!(
        s.reschedule(&queued(9_999), 1, 0, String::new()).await,
        Err(StoreError::UnknownDelivery(9_999))
    ));
    assert!(matches!(
        s.dead_letter(&queued(9_999), dl("x")).await,
        Err(StoreError::UnknownDelivery(9_999))
    ));
    // A failed command in a batch leaves the store healthy.
    assert!(s.is_healthy());
}

#[tokio::test]
async fn dlq_pagination_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for i in 0..25 {
        let target = if i % 5 == 0 { "b" } else { "a" };
        s.ingest(ev(&format!("e{i:02}"), None, i, &[target]))
            .await
            .unwrap();
    }
    let mut seqs = Vec::new();
    for t in ["a", "b"] {
        seqs.extend(s.due(t, 1_000, 100).await.unwrap());
    }
    seqs.sort_by_key(|d| d.event_id.clone());
    for (i, d) in seqs.iter().enumerate() {
        s.dead_letter_at(
            d,
            dl(if i < 20 { "http_5xx" } else { "timeout" }),
            1_000 + i as i64,
        )
        .await
        .unwrap();
    }
    assert!(s.due("a", i64::MAX, 100).await.unwrap().is_empty());
    let depths = s.dlq_depths().await.unwrap();
    assert_eq!((depths["a"], depths["b"]), (20, 5));

    // Three pages of 10, 10, 5, in id order, no overlaps.
    let mut token = None;
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    loop {
        let page = s.list_dlq(DlqFilter::default(), token, 10).await.unwrap();
        sizes.push(page.items.len());
        all.extend(page.items);
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    let ids: Vec<i64> = all.iter().map(|d| d.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(all[0].event_id, "e00");
    assert_eq!(all[0].error_code, "http_5xx");
    assert_eq!(
        all[0].exhausted_condition.as_deref(),
        Some("MaximumRetryAttempts")
    );
    assert_eq!((all[0].retry_attempts, all[0].failed_at_ms), (3, 1_000));
    assert_eq!(all[0].enqueued_at_ms, 0);
    assert_eq!(s.get_dlq(all[3].id).await.unwrap().as_ref(), Some(&all[3]));
    assert_eq!(s.get_dlq(-1).await.unwrap(), None);

    // Filters.
    let f = |target: Option<&str>, code: Option<&str>, from, to| DlqFilter {
        target: target.map(Into::into),
        error_code: code.map(Into::into),
        failed_from_ms: from,
        failed_to_ms: to,
    };
    for (filter, expected) in [
        (f(Some("b"), None, None, None), 5),
        (f(None, Some("timeout"), None, None), 5),
        (f(None, None, Some(1_010), Some(1_015)), 5),
        (f(Some("a"), Some("timeout"), None, None), 4),
        (f(Some("zzz"), None, None, None), 0),
    ] {
        let page = s.list_dlq(filter.clone(), None, 100).await.unwrap();
        assert_eq!(page.items.len(), expected, "{filter:?}");
        assert!(page.next_page_token.is_none());
    }

    // Tokens are checked.
    for bad in ["", "garbage", "dlq1.x", "aud1.5"] {
        assert!(
            matches!(
                s.list_dlq(DlqFilter::default(), Some(bad.into()), 10).await,
                Err(StoreError::BadPageToken)
            ),
            "{bad}"
        );
    }

    // Redrive by id (with an unknown id and a repeat).
    let r = s
        .redrive(
            RedriveSelector::Ids(vec![all[0].id, all[1].id, 424_242, all[0].id]),
            5_000,
        )
        .await
        .unwrap();
    assert_eq!(r.moved, 2);
    assert_eq!(r.missing, vec![424_242]);
    assert_eq!(r.per_target.get("b"), Some(&1));
    assert_eq!(r.per_target.get("a"), Some(&1));
    let due_b = s.due("b", 5_000, 10).await.unwrap();
    assert_eq!(due_b.len(), 1);
    assert_eq!(due_b[0].event_id, "e00");
    assert_eq!(
        (
            due_b[0].attempts,
            due_b[0].next_attempt_at_ms,
            due_b[0].enqueued_at_ms
        ),
        (0, 5_000, 5_000)
    );
    assert!(s.due("b", 4_999, 10).await.unwrap().is_empty());
    assert_eq!(s.get_dlq(all[0].id).await.unwrap(), None);

    // Redrive a time range of one target: failed_at in [1010, 1020) and target a.
    let r = s
        .redrive(
            RedriveSelector::TimeRange {
                from_ms: 1_010,
                to_ms: 1_020,
                target: Some("a".into()),
            },
            6_000,
        )
        .await
        .unwrap();
    assert_eq!(r.moved, 8);
    assert_eq!(r.per_target.len(), 1);
    assert_eq!(s.due("a", 6_000, 100).await.unwrap().len(), 9);

    // Redrive all of target b, then everything.
    let r = s
        .redrive(
            RedriveSelector::All {
                target: Some("b".into()),
            },
            7_000,
        )
        .await
        .unwrap();
    assert_eq!(r.moved, 4); // e05, e10, e15, e20 (e00 went back by id)
    let r = s
        .redrive(RedriveSelector::All { target: None }, 8_000)
        .await
        .unwrap();
    assert_eq!(r.moved, 11);
    assert_eq!(r.per_target.get("a"), Some(&11));
    assert!(s.dlq_depths().await.unwrap().is_empty());
    let depths = s.queue_depths().await.unwrap();
    assert_eq!((depths["a"], depths["b"]), (20, 5));
    let r = s
        .redrive(RedriveSelector::All { target: None }, 9_000)
        .await
        .unwrap();
    assert_eq!(r.moved, 0);
    // Redriven rows keep their ids' order: due order is by due time then seq.
    let due_a = s.due("a", 8_000, 100).await.unwrap();
    assert!(
        due_a
            .windows(2)
            .all(|w| (w[0].next_attempt_at_ms, w[0].id) < (w[1].next_attempt_at_ms, w[1].id))
    );
}

#[tokio::test]
async fn audit_pagination_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut seqs = Vec::new();
    for i in 0..25 {
        let seq = s
            .append_audit(
                "admin".into(),
                "dlq.redrive".into(),
                serde_json::json!({"n": i, "ids": [i, i + 1]}),
            )
            .await
            .unwrap();
        seqs.push(seq);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let mut token = None;
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let page = s.list_audit(token, 10).await.unwrap();
        pages += 1;
        got.extend(page.items);
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let ns: Vec<i64> = got
        .iter()
        .map(|a| a.detail["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..25).rev().collect::<Vec<_>>());
    assert_eq!(got[0].actor, "admin");
    assert_eq!(got[0].action, "dlq.redrive");
    assert_eq!(got[0].detail["ids"], serde_json::json!([24, 25]));
    assert!(got[0].at_ms > 0);
    assert!(matches!(
        s.list_audit(Some("dlq1.3".into()), 10).await,
        Err(StoreError::BadPageToken)
    ));
    // A limit of 0 is clamped to 1 rather than returning an empty page with a token.
    assert_eq!(s.list_audit(None, 0).await.unwrap().items.len(), 1);
}

/// Runs `(id, dedup key, received_at)` ingests in order (ttl 1000 ms) and checks each outcome:
/// `None` = stored, `Some(original)` = duplicate of `original`.
async fn check_dedup(cases: &[(&str, Option<&str>, i64, Option<&str>)]) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut stored = 0;
    for (id, key, at, expected) in cases {
        let before = s.table_counts().await.unwrap();
        let got = s.ingest(ev(id, *key, *at, &["t"])).await.unwrap();
        let want = match expected {
            None => IngestOutcome::Stored,
            Some(orig) => IngestOutcome::Duplicate {
                original_id: orig.to_string(),
            },
        };
        assert_eq!(got, want, "case {id} {key:?} at {at}");
        let after = s.table_counts().await.unwrap();
        if expected.is_some() {
            assert_eq!(before, after, "a duplicate must store nothing ({id})");
        } else {
            stored += 1;
        }
    }
    assert_eq!(s.table_counts().await.unwrap()["events"], stored);
    assert_eq!(s.table_counts().await.unwrap()["deliveries"], stored);
}

#[tokio::test]
async fn dedup_semantics() {
    check_dedup(&[
        ("e1", Some("k"), 0, None),
        ("e2", Some("k"), 999, Some("e1")),   // inside the window
        ("e3", Some("k"), 1_000, None),       // expires_at == received_at: expired, replaced
        ("e4", Some("k"), 1_500, Some("e3")), // the replacement claims a fresh window
        ("e5", Some("other"), 1_500, None),
        ("e6", None, 1_500, None),
        ("e6", None, 1_600, Some("e6")), // same envelope id, no key: duplicate
        ("e5", Some("fresh"), 1_600, Some("e5")), // same id, new key: still a duplicate
        ("e7", Some("fresh"), 1_700, None), // and the key was not claimed by it
    ])
    .await;
}

#[tokio::test]
async fn same_batch_duplicate_is_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let pause = s.test_pause_writer().await.unwrap();
    let mut first = Box::pin(s.ingest(ev("first", Some("k"), 10, &["t"])));
    let mut second = Box::pin(s.ingest(ev("second", Some("k"), 10, &["t"])));
    assert!(poll_once(first.as_mut()).is_pending());
    assert!(poll_once(second.as_mut()).is_pending());
    drop(pause); // both are queued: the writer takes them in one batch
    assert_eq!(first.await.unwrap(), IngestOutcome::Stored);
    assert_eq!(
        second.await.unwrap(),
        IngestOutcome::Duplicate {
            original_id: "first".into()
        }
    );
    assert!(s.get_event("second").await.unwrap().is_none());
}

/// With the writer paused, a duplicate of a committed key is answered on the first poll: it
/// never reached the writer. Everything else (a new key, an expired key, a disabled cache)
/// stays queued behind the pause.
#[tokio::test]
async fn committed_keys_are_answered_without_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(
        s.ingest(ev("e1", Some("k"), 100, &["t"])).await.unwrap(),
        IngestOutcome::Stored
    );
    let pause = s.test_pause_writer().await.unwrap();
    let mut dup = Box::pin(s.ingest(ev("e2", Some("k"), 1_099, &["t"])));
    match poll_once(dup.as_mut()) {
        Poll::Ready(Ok(IngestOutcome::Duplicate { original_id })) => assert_eq!(original_id, "e1"),
        other => panic!("expected an immediate duplicate, got {other:?}"),
    }
    // The window (1 000 ms) has closed at 1 100: the writer must decide, and it re-claims.
    let mut expired = Box::pin(s.ingest(ev("e3", Some("k"), 1_100, &["t"])));
    assert!(poll_once(expired.as_mut()).is_pending());
    let mut fresh = Box::pin(s.ingest(ev("e4", Some("other"), 1_100, &["t"])));
    assert!(poll_once(fresh.as_mut()).is_pending());
    drop(pause);
    assert_eq!(expired.await.unwrap(), IngestOutcome::Stored);
    assert_eq!(fresh.await.unwrap(), IngestOutcome::Stored);
    assert!(s.get_event("e2").await.unwrap().is_none());
    // The re-claimed key now points at e3, in the cache as in the table.
    let _pause = s.test_pause_writer().await.unwrap();
    let mut again = Box::pin(s.ingest(ev("e5", Some("k"), 1_200, &[])));
    match poll_once(again.as_mut()) {
        Poll::Ready(Ok(IngestOutcome::Duplicate { original_id })) => assert_eq!(original_id, "e3"),
        other => panic!("expected an immediate duplicate of e3, got {other:?}"),
    }
}

/// A record over the journal's limit (256 MiB) is refused for its event alone, in the same
/// batch as an event that is stored: nothing of it is staged, its key is not claimed, and the
/// store stays healthy (a sender's oversized event must not fail-stop the store).
#[tokio::test]
async fn a_record_too_large_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut big = ev("big", Some("k"), 100, &["t"]);
    big.envelope = "x".repeat(256 << 20);
    let pause = s.test_pause_writer().await.unwrap();
    let mut first = Box::pin(s.ingest(big));
    let mut second = Box::pin(s.ingest(ev("small", Some("k"), 101, &["t"])));
    assert!(poll_once(first.as_mut()).is_pending());
    assert!(poll_once(second.as_mut()).is_pending());
    drop(pause); // one batch
    match first.await {
        Err(StoreError::RecordTooLarge { bytes, max }) => assert!(bytes > max, "{bytes} {max}"),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    // The key was not claimed by the refused event: the next one with it is new.
    assert_eq!(second.await.unwrap(), IngestOutcome::Stored);
    assert!(s.get_event("big").await.unwrap().is_none());
    assert!(s.get_event("small").await.unwrap().is_some());
    assert_eq!(
        s.ingest(ev("after", None, 102, &["t"])).await.unwrap(),
        IngestOutcome::Stored
    );
}

/// `ingest_uncached` skips the cache (its caller asked it already) but not dedup: with the
/// writer paused a committed key's duplicate waits for the writer, which answers `Duplicate`.
#[tokio::test]
async fn ingest_uncached_leaves_the_duplicate_to_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(
        s.ingest(ev("e1", Some("k"), 100, &["t"])).await.unwrap(),
        IngestOutcome::Stored
    );
    assert_eq!(s.cached_duplicate("k", 200).as_deref(), Some("e1"));
    let pause = s.test_pause_writer().await.unwrap();
    let mut dup = Box::pin(s.ingest_uncached(ev("e2", Some("k"), 200, &["t"])));
    assert!(poll_once(dup.as_mut()).is_pending(), "the cache answered");
    drop(pause);
    assert_eq!(
        dup.await.unwrap(),
        IngestOutcome::Duplicate {
            original_id: "e1".into()
        }
    );
    assert!(s.get_event("e2").await.unwrap().is_none());
}

#[tokio::test]
async fn dedup_cache_refills_from_the_table_and_can_be_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.ingest(ev("e1", Some("k"), 100, &[])).await.unwrap();
    s.close().await.unwrap();

    // After a restart the cache is empty: the first duplicate goes through the writer (which
    // answers from the table and caches the key), the second does not.
    let s = open(dir.path());
    let pause = s.test_pause_writer().await.unwrap();
    let mut first = Box::pin(s.ingest(ev("e2", Some("k"), 200, &[])));
    assert!(poll_once(first.as_mut()).is_pending());
    drop(pause);
    assert_eq!(
        first.await.unwrap(),
        IngestOutcome::Duplicate {
            original_id: "e1".into()
        }
    );
    let pause = s.test_pause_writer().await.unwrap();
    {
        let mut second = Box::pin(s.ingest(ev("e3", Some("k"), 300, &[])));
        assert!(matches!(
            poll_once(second.as_mut()),
            Poll::Ready(Ok(IngestOutcome::Duplicate { .. }))
        ));
    }
    drop(pause);
    s.close().await.unwrap();

    let s = Store::open_tuned(
        dir.path(),
        StoreOptions::default(),
        StoreTuning {
            dedup_cache_entries: 0,
            ..StoreTuning::default()
        },
    )
    .unwrap();
    s.ingest(ev("e4", Some("k2"), 400, &[])).await.unwrap();
    let pause = s.test_pause_writer().await.unwrap();
    let mut dup = Box::pin(s.ingest(ev("e5", Some("k2"), 500, &[])));
    assert!(
        poll_once(dup.as_mut()).is_pending(),
        "no cache: the writer answers"
    );
    drop(pause);
    assert_eq!(
        dup.await.unwrap(),
        IngestOutcome::Duplicate {
            original_id: "e4".into()
        }
    );
}

#[tokio::test]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for i in 0..10 {
        s.ingest(ev(
            &format!("e{i}"),
            Some(&format!("k{i}")),
            100,
            &["a", "b"],
        ))
        .await
        .unwrap();
    }
    let d = s.due("a", 100, 1).await.unwrap();
    s.dead_letter_at(&d[0], dl("x"), 200).await.unwrap();
    let d = s.due("a", 100, 1).await.unwrap();
    s.reschedule(&d[0], 1, 300, "HTTP 500".into())
        .await
        .unwrap();
    s.append_audit("me".into(), "test".into(), serde_json::json!({}))
        .await
        .unwrap();
    let before = s.table_counts().await.unwrap();
    assert_eq!(before["deliveries"], 19);
    let clone = s.clone();
    s.close().await.unwrap();
    assert!(matches!(
        clone.ingest(ev("late", None, 1, &[])).await,
        Err(StoreError::ShuttingDown)
    ));
    clone.clone().close().await.unwrap(); // closing twice is fine
    drop(clone);
    // close checkpointed with TRUNCATE: the WAL is empty.
    let wal = dir.path().join("switchboard.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);

    let s = open(dir.path());
    assert_eq!(s.table_counts().await.unwrap(), before);
    // The settled first attempts (dead-lettered, rescheduled) are not handed out again.
    let a = s.due("a", 300, 100).await.unwrap();
    assert_eq!(a.len(), 9);
    assert_eq!((a[0].event_id.as_str(), a[0].attempts), ("e1", 1));
    assert_eq!(s.due("b", 100, 100).await.unwrap().len(), 10);
    assert_eq!(s.dlq_depths().await.unwrap()["a"], 1);
    assert_eq!(s.list_audit(None, 10).await.unwrap().items.len(), 1);
    // Dedup claims survive too.
    assert_eq!(
        s.ingest(ev("again", Some("k3"), 500, &["a"]))
            .await
            .unwrap(),
        IngestOutcome::Duplicate {
            original_id: "e3".into()
        }
    );
    // The journal goes on after what it holds: a new event's delivery comes after the others.
    let journal_seq = |d: &Delivery| match d.id {
        DeliveryId::Journal { seq, .. } => Some(seq),
        DeliveryId::Queued(_) => None,
    };
    let max_before = a.iter().filter_map(journal_seq).max().unwrap();
    s.ingest(ev("new", None, 100, &["a"])).await.unwrap();
    let after = s.due("a", 300, 100).await.unwrap();
    let newest = after.iter().filter_map(journal_seq).max().unwrap();
    assert!(newest > max_before);
    assert_eq!(after.last().map(|d| d.event_id.as_str()), Some("new"));
}

/// Retention deletes whole journal segments, oldest first, and only what no one needs: every
/// event in it is past retention, every target has read past it, and no live dedup claim
/// points into it.
#[tokio::test]
async fn expire_deletes_whole_segments_nobody_needs() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = StoreTuning {
        journal_segment_bytes: 4096,
        ..StoreTuning::default()
    };
    let s = Store::open_tuned(dir.path(), StoreOptions::default(), tuning.clone()).unwrap();
    s.register_targets(&["t".to_string()]).await.unwrap();
    // 60 old events (t = 0..60, keys live 1 s), in many small segments, each for target t.
    for i in 0..60 {
        s.ingest(ev(&format!("old{i}"), Some(&format!("k{i}")), i, &["t"]))
            .await
            .unwrap();
    }
    for i in 0..5 {
        s.ingest(ev(
            &format!("new{i}"),
            Some(&format!("n{i}")),
            10_000,
            &["t"],
        ))
        .await
        .unwrap();
    }
    // Target t has read nothing yet: nothing may go, however old.
    let st = s.expire(10_500, 5_000, 100).await.unwrap();
    assert_eq!(st.events_deleted, 0);
    // t takes the first 30 old events.
    let due = s.due("t", 10_500, 30).await.unwrap();
    let ids: Vec<DeliveryId> = due.iter().map(|d| d.id).collect();
    s.complete("t", ids).await.unwrap();
    // Force the dedup memtable out so the claims are in runs (the journal is then not needed
    // to rebuild them): a restart does that.
    s.close().await.unwrap();
    let s = Store::open_tuned(dir.path(), StoreOptions::default(), tuning).unwrap();
    s.register_targets(&["t".to_string()]).await.unwrap();
    let st = s.expire(10_500, 5_000, 100).await.unwrap();
    assert!(st.segments_deleted > 0);
    assert!(
        st.events_deleted > 0 && st.events_deleted <= 30,
        "only segments t has read past: {st:?}"
    );
    let counts = s.table_counts().await.unwrap();
    assert_eq!(counts["events"], 65 - st.events_deleted);
    assert!(s.get_event("old0").await.unwrap().is_none());
    assert!(s.get_event("old45").await.unwrap().is_some());
    assert!(s.get_event("new3").await.unwrap().is_some());
    // What t still owes is intact and in order.
    let rest = s.due("t", 10_500, 100).await.unwrap();
    assert_eq!(rest.len(), 35);
    assert_eq!(rest[0].event_id, "old30");
    // An ended claim is claimable again; a live one is not.
    assert_eq!(
        s.ingest(ev("re", Some("k1"), 10_500, &[])).await.unwrap(),
        IngestOutcome::Stored
    );
    assert_eq!(
        s.ingest(ev("dup", Some("n1"), 10_500, &[])).await.unwrap(),
        IngestOutcome::Duplicate {
            original_id: "new1".into()
        }
    );
    // Once t has read everything, every sealed old segment can go.
    let ids: Vec<DeliveryId> = rest.iter().map(|d| d.id).collect();
    s.complete("t", ids).await.unwrap();
    let st2 = s.expire(20_000, 5_000, 100).await.unwrap();
    assert!(st2.events_deleted > 0);
    // Only the active segment is left (it is never deleted).
    let left = s.table_counts().await.unwrap()["events"];
    assert_eq!(left, 66 - st.events_deleted - st2.events_deleted);
    assert!(s.get_event("old30").await.unwrap().is_none());
    assert!(s.get_event("new4").await.unwrap().is_some());
}

#[tokio::test]
async fn full_queue_answers_busy_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        queue_capacity: 2,
        ..StoreOptions::default()
    };
    let s = Store::open(dir.path(), opts).unwrap();
    let pause = s.test_pause_writer().await.unwrap();
    let mut a = Box::pin(s.ingest(ev("a", None, 1, &["t"])));
    let mut b = Box::pin(s.ingest(ev("b", None, 1, &["t"])));
    assert!(poll_once(a.as_mut()).is_pending());
    assert!(poll_once(b.as_mut()).is_pending());
    // Third one: the queue is full and the writer is stalled. Busy on the first poll.
    let mut c = Box::pin(s.ingest(ev("c", None, 1, &["t"])));
    assert!(matches!(
        poll_once(c.as_mut()),
        Poll::Ready(Err(StoreError::Busy))
    ));
    assert!(StoreError::Busy.is_retryable());
    assert!(s.is_healthy());
    drop(pause);
    assert_eq!(a.await.unwrap(), IngestOutcome::Stored);
    assert_eq!(b.await.unwrap(), IngestOutcome::Stored);
    assert!(s.get_event("c").await.unwrap().is_none());
    // Once drained, ingest works again.
    assert_eq!(
        s.ingest(ev("c", None, 1, &[])).await.unwrap(),
        IngestOutcome::Stored
    );
}

#[tokio::test]
async fn failed_commit_is_fail_stop() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.ingest(ev("before", None, 1, &["t"])).await.unwrap();
    s.test_fail_next_commit();
    let r = s.ingest(ev("lost", None, 2, &["t"])).await;
    assert!(matches!(r, Err(StoreError::Failed(_))), "{r:?}");
    assert!(!s.is_healthy());
    // Every later call fails too, writes and reads, without silent retries.
    assert!(matches!(
        s.ingest(ev("after", None, 3, &["t"])).await,
        Err(StoreError::Failed(_))
    ));
    assert!(matches!(
        s.complete("t", vec![DeliveryId::Queued(1)]).await,
        Err(StoreError::Failed(_))
    ));
    assert!(matches!(
        s.append_audit("a".into(), "b".into(), serde_json::Value::Null)
            .await,
        Err(StoreError::Failed(_))
    ));
    assert!(matches!(
        s.due("t", 10, 10).await,
        Err(StoreError::Failed(_))
    ));
    match s.ingest(ev("x", None, 3, &[])).await {
        Err(StoreError::Failed(msg)) => assert!(msg.contains("injected"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.clone().close().await,
        Err(StoreError::Failed(_))
    ));
    drop(s);

    // A reopen recovers from what is on disk: the acknowledged event, not the failed one.
    let s = open(dir.path());
    assert!(s.is_healthy());
    assert!(s.get_event("before").await.unwrap().is_some());
    assert!(s.get_event("lost").await.unwrap().is_none());
    assert_eq!(s.due("t", 10, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_ingests_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.ingest(ev(
                &format!("c{i}"),
                Some(&format!("k{}", i % 100)),
                5,
                &["t"],
            ))
            .await
            .unwrap()
        }));
    }
    let mut stored = 0;
    for t in tasks {
        if t.await.unwrap() == IngestOutcome::Stored {
            stored += 1;
        }
    }
    // 100 distinct keys: exactly one winner each, whatever the batching.
    assert_eq!(stored, 100);
    assert_eq!(s.table_counts().await.unwrap()["deliveries"], 100);
}

#[test]
fn schema_too_new_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
        drop(s);
    }
    let db = dir.path().join(switchboard_store::DB_FILE_NAME);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    drop(conn);
    match Store::open(dir.path(), StoreOptions::default()) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (99, switchboard_store::SCHEMA_VERSION));
        }
        other => panic!("{other:?}"),
    }

    let other = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(other.path().join("switchboard.db")).unwrap();
    conn.execute_batch("CREATE TABLE t(x)").unwrap();
    drop(conn);
    assert!(matches!(
        Store::open(other.path(), StoreOptions::default()),
        Err(StoreError::NotAStore(_))
    ));

    for opts in [
        StoreOptions {
            max_batch: 0,
            ..StoreOptions::default()
        },
        StoreOptions {
            queue_capacity: 0,
            ..StoreOptions::default()
        },
    ] {
        assert!(matches!(
            Store::open(dir.path(), opts),
            Err(StoreError::InvalidOptions(_))
        ));
    }
}

#[test]
fn store_and_its_futures_are_send_and_sync() {
    fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_sync_clone::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async { open(dir.path()) });
    // The gateway awaits these inside axum handlers and spawned tasks.
    send(&s.ingest(ev("x", None, 1, &[])));
    send(&s.due("t", 1, 1));
    send(&s.list_dlq(DlqFilter::default(), None, 1));
    send(&s.redrive(RedriveSelector::Ids(vec![]), 1));
    send(&s.clone().close());
}

/// A store written by the previous release (schema version 1: events and dedup keys in SQLite)
/// opens, moves its events and live claims into the journal and the dedup index, and keeps its
/// queued deliveries, dead letters and audit log.
#[tokio::test]
async fn a_version_1_store_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(switchboard_store::DB_FILE_NAME);
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             INSERT INTO meta VALUES ('schema_version', '1');",
        )
        .unwrap();
        c.execute_batch(switchboard_store::SCHEMA_DDL_V1).unwrap();
        let uuid = "0192d4c3-7a1b-7cde-8f00-112233445566";
        for (id, at) in [("old-1", 100), (uuid, 200), ("old-3", 300)] {
            c.execute(
                "INSERT INTO events(id, source, received_at_ms, envelope) VALUES (?1, 's', ?2, ?3)",
                rusqlite::params![id, at, format!(r#"{{"id":"{id}"}}"#)],
            )
            .unwrap();
        }
        let far = i64::MAX / 4;
        for (key, id, exp) in [
            ("k1", "old-1", far),
            ("k2", uuid, far),
            ("gone", "old-3", 1),
            ("orphan", "ffffffff-0000-7000-8000-000000000001", far),
        ] {
            c.execute(
                "INSERT INTO dedup(key, event_id, expires_at_ms) VALUES (?1, ?2, ?3)",
                rusqlite::params![key, id, exp],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO deliveries(event_id, target, rule, payload, attempts, enqueued_at_ms,
                                    next_attempt_at_ms) VALUES ('old-1', 't', 'r', 'p1', 2, 100, 500)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO dlq(event_id, target, rule, payload, error_code, error_message,
                             retry_attempts, enqueued_at_ms, failed_at_ms)
             VALUES ('old-3', 't', 'r', 'p3', 'HTTP_500', 'boom', 3, 300, 400)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO audit(at_ms, actor, action, detail) VALUES (1, 'a', 'x', '{}')",
            [],
        )
        .unwrap();
    }
    let s = open(dir.path());
    let counts = s.table_counts().await.unwrap();
    assert_eq!(
        (
            counts["events"],
            counts["deliveries"],
            counts["dlq"],
            counts["audit"]
        ),
        (3, 1, 1, 1)
    );
    for id in ["old-1", "0192d4c3-7a1b-7cde-8f00-112233445566", "old-3"] {
        let e = s.get_event(id).await.unwrap().expect("migrated event");
        assert_eq!(e.envelope, format!(r#"{{"id":"{id}"}}"#));
    }
    let dup = |key: &str, id: &str| {
        let mut e = ev(id, Some(key), 1_000, &[]);
        e.dedup.as_mut().unwrap().ttl_ms = 1_000;
        e
    };
    for (key, original) in [
        ("k1", "old-1"),
        ("k2", "0192d4c3-7a1b-7cde-8f00-112233445566"),
        ("orphan", "ffffffff-0000-7000-8000-000000000001"),
    ] {
        assert_eq!(
            s.ingest(dup(key, "new")).await.unwrap(),
            IngestOutcome::Duplicate {
                original_id: original.into()
            },
            "{key}"
        );
    }
    assert_eq!(
        s.ingest(dup("gone", "new-2")).await.unwrap(),
        IngestOutcome::Stored,
        "an ended claim is not carried over"
    );
    let due = s.due("t", 500, 10).await.unwrap();
    assert_eq!(
        (due.len(), due[0].payload.as_str(), due[0].attempts),
        (1, "p1", 2)
    );
    assert_eq!(s.dlq_depths().await.unwrap()["t"], 1);
    s.close().await.unwrap();
    // The migration happens once; the store now opens as version 2.
    let c = rusqlite::Connection::open(&db).unwrap();
    let v: String = c
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, switchboard_store::SCHEMA_VERSION.to_string());
    let tables: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name IN ('events', 'dedup')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    drop(c);
    let s = open(dir.path());
    assert_eq!(s.table_counts().await.unwrap()["events"], 4);
    s.close().await.unwrap();
}
