//! Model-based test: random operation sequences against the store and against a plain
//! `BTreeMap` model, compared after every step (redb's fuzz-against-a-model habit).
//!
//! The model predicts everything, including seqs and DLQ ids (AUTOINCREMENT: one more than
//! the largest ever used, in insertion order) and dedup windows. A `Reopen` step closes and
//! reopens the store to check that nothing depends on in-memory state.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use switchboard_store::{
    DeadLetterInfo, DlqFilter, IngestOutcome, RedriveSelector, Store, StoreOptions,
};

const TARGETS: [&str; 3] = ["a", "b", "c"];
const TTL: i64 = 1_000;
const RETENTION: i64 = 3_000;

#[derive(Debug, Clone)]
enum Op {
    /// Advance the clock by `dt`, then ingest a new event (or reuse an old id when `reuse`).
    Ingest {
        dt: i64,
        key: Option<u8>,
        targets: u8,
        reuse: Option<usize>,
    },
    Complete(usize),
    Reschedule(usize, i64),
    DeadLetter(usize),
    RedriveIds(Vec<usize>),
    RedriveAll(Option<u8>),
    Expire,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0i64..700, proptest::option::of(0u8..5), 0u8..8, proptest::option::weighted(0.1, any::<usize>()))
            .prop_map(|(dt, key, targets, reuse)| Op::Ingest { dt, key, targets, reuse }),
        2 => any::<usize>().prop_map(Op::Complete),
        1 => (any::<usize>(), 0i64..2_000).prop_map(|(i, d)| Op::Reschedule(i, d)),
        2 => any::<usize>().prop_map(Op::DeadLetter),
        1 => proptest::collection::vec(any::<usize>(), 0..4).prop_map(Op::RedriveIds),
        1 => proptest::option::of(0u8..3).prop_map(Op::RedriveAll),
        1 => Just(Op::Expire),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    event_id: String,
    target: String,
    attempts: u32,
    next_at: i64,
}

#[derive(Default)]
struct Model {
    now: i64,
    next_event: u64,
    next_seq: i64,
    next_dlq: i64,
    /// key -> (event id, expires at)
    dedup: BTreeMap<String, (String, i64)>,
    /// id -> received at
    events: BTreeMap<String, i64>,
    deliveries: BTreeMap<i64, Row>,
    dlq: BTreeMap<i64, Row>,
}

fn pick<T: Copy>(keys: impl Iterator<Item = T>, i: usize) -> Option<T> {
    let v: Vec<T> = keys.collect();
    if v.is_empty() {
        None
    } else {
        Some(v[i % v.len()])
    }
}

fn info() -> DeadLetterInfo {
    DeadLetterInfo {
        error_code: "e".into(),
        error_message: "m".into(),
        exhausted_condition: None,
        retry_attempts: 1,
    }
}

async fn check_state(store: &Store, m: &Model) {
    for t in TARGETS {
        let got: Vec<(i64, Row)> = store
            .due(t, i64::MAX, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|d| {
                (
                    d.seq,
                    Row {
                        event_id: d.event_id,
                        target: d.target,
                        attempts: d.attempts,
                        next_at: d.next_attempt_at_ms,
                    },
                )
            })
            .collect();
        let mut want: Vec<(i64, Row)> = m
            .deliveries
            .iter()
            .filter(|(_, r)| r.target == t)
            .map(|(s, r)| (*s, r.clone()))
            .collect();
        want.sort_by_key(|(s, r)| (r.next_at, *s));
        assert_eq!(got, want, "queue {t}");
    }
    let dlq = store
        .list_dlq(DlqFilter::default(), None, 1_000)
        .await
        .unwrap();
    let got: Vec<(i64, String, String)> = dlq
        .items
        .into_iter()
        .map(|d| (d.id, d.event_id, d.target))
        .collect();
    let want: Vec<(i64, String, String)> = m
        .dlq
        .iter()
        .map(|(id, r)| (*id, r.event_id.clone(), r.target.clone()))
        .collect();
    assert_eq!(got, want, "dlq");
    let counts = store.table_counts().await.unwrap();
    assert_eq!(counts["events"], m.events.len() as u64, "events");
    assert_eq!(counts["dedup"], m.dedup.len() as u64, "dedup");
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        synchronous_full: false,
        ..StoreOptions::default()
    };
    let mut store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut m = Model {
        next_seq: 1,
        next_dlq: 1,
        ..Model::default()
    };
    let mut ids: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::Ingest {
                dt,
                key,
                targets,
                reuse,
            } => {
                m.now += dt;
                let id = match reuse.filter(|_| !ids.is_empty()) {
                    Some(i) => ids[i % ids.len()].clone(),
                    None => {
                        m.next_event += 1;
                        format!("ev{}", m.next_event)
                    }
                };
                let key = key.map(|k| format!("k{k}"));
                let tlist: Vec<&str> = (0..3)
                    .filter(|i| targets & (1 << i) != 0)
                    .map(|i| TARGETS[i])
                    .collect();
                let mut e = common::ev(&id, key.as_deref(), m.now, &tlist);
                if let Some(d) = e.dedup.as_mut() {
                    d.ttl_ms = TTL;
                }
                let got = store.ingest(e).await.unwrap();
                // The model: a live key wins, then an existing id, else store.
                let want = match key.as_ref().and_then(|k| m.dedup.get(k)) {
                    Some((orig, exp)) if *exp > m.now => IngestOutcome::Duplicate {
                        original_id: orig.clone(),
                    },
                    _ if m.events.contains_key(&id) => IngestOutcome::Duplicate {
                        original_id: id.clone(),
                    },
                    _ => {
                        m.events.insert(id.clone(), m.now);
                        if let Some(k) = key {
                            m.dedup.insert(k, (id.clone(), m.now + TTL));
                        }
                        for t in tlist {
                            m.deliveries.insert(
                                m.next_seq,
                                Row {
                                    event_id: id.clone(),
                                    target: t.into(),
                                    attempts: 0,
                                    next_at: m.now,
                                },
                            );
                            m.next_seq += 1;
                        }
                        ids.push(id.clone());
                        IngestOutcome::Stored
                    }
                };
                assert_eq!(got, want);
            }
            Op::Complete(i) => {
                if let Some(seq) = pick(m.deliveries.keys().copied(), i) {
                    store.complete(vec![seq]).await.unwrap();
                    m.deliveries.remove(&seq);
                }
            }
            Op::Reschedule(i, delay) => {
                if let Some(seq) = pick(m.deliveries.keys().copied(), i) {
                    let row = m.deliveries.get_mut(&seq).unwrap();
                    row.attempts += 1;
                    row.next_at = m.now + delay;
                    store
                        .reschedule(seq, row.attempts, row.next_at, "x".into())
                        .await
                        .unwrap();
                }
            }
            Op::DeadLetter(i) => {
                if let Some(seq) = pick(m.deliveries.keys().copied(), i) {
                    store.dead_letter_at(seq, info(), m.now).await.unwrap();
                    let row = m.deliveries.remove(&seq).unwrap();
                    m.dlq.insert(m.next_dlq, row);
                    m.next_dlq += 1;
                }
            }
            Op::RedriveIds(picks) => {
                let mut sel = Vec::new();
                for p in picks {
                    sel.push(pick(m.dlq.keys().copied(), p).unwrap_or(-7));
                }
                let r = store
                    .redrive(RedriveSelector::Ids(sel.clone()), m.now)
                    .await
                    .unwrap();
                let unique: BTreeSet<i64> = sel.into_iter().collect();
                let mut moved = 0;
                for id in unique {
                    if let Some(mut row) = m.dlq.remove(&id) {
                        row.attempts = 0;
                        row.next_at = m.now;
                        m.deliveries.insert(m.next_seq, row);
                        m.next_seq += 1;
                        moved += 1;
                    }
                }
                assert_eq!(r.moved, moved);
            }
            Op::RedriveAll(target) => {
                let target = target.map(|t| TARGETS[t as usize].to_string());
                let r = store
                    .redrive(
                        RedriveSelector::All {
                            target: target.clone(),
                        },
                        m.now,
                    )
                    .await
                    .unwrap();
                let chosen: Vec<i64> = m
                    .dlq
                    .iter()
                    .filter(|(_, r)| target.as_ref().is_none_or(|t| &r.target == t))
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(r.moved, chosen.len() as u64);
                for id in chosen {
                    let mut row = m.dlq.remove(&id).unwrap();
                    row.attempts = 0;
                    row.next_at = m.now;
                    m.deliveries.insert(m.next_seq, row);
                    m.next_seq += 1;
                }
            }
            Op::Expire => {
                let st = store.expire(m.now, RETENTION, 100_000).await.unwrap();
                let before = (m.dedup.len(), m.events.len());
                let now = m.now;
                m.dedup.retain(|_, (_, exp)| *exp > now);
                m.events.retain(|_, at| *at >= now - RETENTION);
                assert_eq!(
                    (st.dedup_deleted, st.events_deleted),
                    (
                        (before.0 - m.dedup.len()) as u64,
                        (before.1 - m.events.len()) as u64
                    )
                );
                assert!(!st.more);
            }
            Op::Reopen => {
                store.close().await.unwrap();
                store = Store::open(dir.path(), opts.clone()).unwrap();
            }
        }
        check_state(&store, &m).await;
    }
    store.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
