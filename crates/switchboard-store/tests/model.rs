//! Model-based test: random operation sequences against the store and against a plain
//! `BTreeMap` model, compared after every step (redb's fuzz-against-a-model habit).
//!
//! The model predicts everything, including delivery ids (a first attempt is named by its
//! journal record and position; a retry by its `deliveries` row, AUTOINCREMENT), DLQ ids and
//! dedup windows. A `Reopen` step closes and reopens the store to check that nothing depends on
//! in-memory state. Segments are small, so `Expire` deletes some: a first attempt still owed
//! must survive every one.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use switchboard_store::{
    DeadLetterInfo, Delivery, DeliveryId, DlqFilter, IngestOutcome, RedriveSelector, Store,
    StoreOptions, StoreTuning,
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
    enqueued_at: i64,
}

#[derive(Default)]
struct Model {
    now: i64,
    next_event: u64,
    /// Journal records written.
    records: u64,
    next_seq: i64,
    next_dlq: i64,
    /// key -> (event id, expires at)
    dedup: BTreeMap<String, (String, i64)>,
    /// envelope id -> when its own claim expires
    identity: BTreeMap<String, i64>,
    /// First attempts still owed, by journal position.
    journal: BTreeMap<(u64, u32), Row>,
    /// Retries and redriven letters, by `deliveries` seq.
    queued: BTreeMap<i64, Row>,
    dlq: BTreeMap<i64, Row>,
    /// Records retention has deleted (the store reports how many).
    deleted: u64,
}

impl Model {
    /// Every waiting delivery id, retries first: what the picks choose from.
    fn all(&self) -> Vec<DeliveryId> {
        self.queued
            .keys()
            .map(|s| DeliveryId::Queued(*s))
            .chain(
                self.journal
                    .keys()
                    .map(|&(seq, index)| DeliveryId::Journal { seq, index }),
            )
            .collect()
    }

    fn row(&self, id: DeliveryId) -> Row {
        match id {
            DeliveryId::Queued(s) => self.queued[&s].clone(),
            DeliveryId::Journal { seq, index } => self.journal[&(seq, index)].clone(),
        }
    }

    fn remove(&mut self, id: DeliveryId) -> Row {
        match id {
            DeliveryId::Queued(s) => self.queued.remove(&s),
            DeliveryId::Journal { seq, index } => self.journal.remove(&(seq, index)),
        }
        .unwrap()
    }
}

fn delivery(id: DeliveryId, r: &Row) -> Delivery {
    Delivery {
        id,
        event_id: r.event_id.clone(),
        target: r.target.clone(),
        rule: format!("rule-{}", r.target),
        payload: format!(r#"{{"id":"{}","to":"{}"}}"#, r.event_id, r.target),
        attempts: r.attempts,
        enqueued_at_ms: r.enqueued_at,
        next_attempt_at_ms: r.next_at,
    }
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
        let got: Vec<(DeliveryId, Row)> = store
            .due(t, i64::MAX, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|d| {
                (
                    d.id,
                    Row {
                        event_id: d.event_id,
                        target: d.target,
                        attempts: d.attempts,
                        next_at: d.next_attempt_at_ms,
                        enqueued_at: d.enqueued_at_ms,
                    },
                )
            })
            .collect();
        // Retries by due time then seq, then first attempts in journal order.
        let mut want: Vec<(DeliveryId, Row)> = m
            .queued
            .iter()
            .filter(|(_, r)| r.target == t)
            .map(|(s, r)| (DeliveryId::Queued(*s), r.clone()))
            .collect();
        want.sort_by_key(|(id, r)| (r.next_at, *id));
        want.extend(
            m.journal
                .iter()
                .filter(|(_, r)| r.target == t)
                .map(|(&(seq, index), r)| (DeliveryId::Journal { seq, index }, r.clone())),
        );
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
    assert_eq!(counts["events"], m.records - m.deleted, "events");
    assert_eq!(
        counts["deliveries"],
        (m.journal.len() + m.queued.len()) as u64,
        "deliveries"
    );
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        synchronous_full: false,
        ..StoreOptions::default()
    };
    let tuning = StoreTuning {
        journal_segment_bytes: 4096,
        ..StoreTuning::default()
    };
    let mut store = Store::open_tuned(dir.path(), opts.clone(), tuning.clone()).unwrap();
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
                // The model: a live key wins, then a live claim on the id, else store.
                let want = match key.as_ref().and_then(|k| m.dedup.get(k)) {
                    Some((orig, exp)) if *exp > m.now => IngestOutcome::Duplicate {
                        original_id: orig.clone(),
                    },
                    _ if m.identity.get(&id).is_some_and(|exp| *exp > m.now) => {
                        IngestOutcome::Duplicate {
                            original_id: id.clone(),
                        }
                    }
                    _ => {
                        m.identity.insert(id.clone(), m.now + TTL);
                        if let Some(k) = key {
                            m.dedup.insert(k, (id.clone(), m.now + TTL));
                        }
                        for (i, t) in tlist.iter().enumerate() {
                            m.journal.insert(
                                (m.records, i as u32),
                                Row {
                                    event_id: id.clone(),
                                    target: (*t).into(),
                                    attempts: 0,
                                    next_at: m.now,
                                    enqueued_at: m.now,
                                },
                            );
                        }
                        m.records += 1;
                        ids.push(id.clone());
                        IngestOutcome::Stored
                    }
                };
                assert_eq!(got, want);
            }
            Op::Complete(i) => {
                if let Some(id) = pick(m.all().into_iter(), i) {
                    let row = m.remove(id);
                    store.complete(&row.target, vec![id]).await.unwrap();
                }
            }
            Op::Reschedule(i, delay) => {
                if let Some(id) = pick(m.all().into_iter(), i) {
                    let d = delivery(id, &m.row(id));
                    let mut row = m.remove(id);
                    row.attempts += 1;
                    row.next_at = m.now + delay;
                    store
                        .reschedule(&d, row.attempts, row.next_at, "x".into())
                        .await
                        .unwrap();
                    // A first attempt becomes a row of its own; a retry keeps its row.
                    let seq = match id {
                        DeliveryId::Queued(s) => s,
                        DeliveryId::Journal { .. } => {
                            m.next_seq += 1;
                            m.next_seq - 1
                        }
                    };
                    m.queued.insert(seq, row);
                }
            }
            Op::DeadLetter(i) => {
                if let Some(id) = pick(m.all().into_iter(), i) {
                    let d = delivery(id, &m.row(id));
                    store.dead_letter_at(&d, info(), m.now).await.unwrap();
                    let row = m.remove(id);
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
                        row.enqueued_at = m.now;
                        m.queued.insert(m.next_seq, row);
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
                    row.enqueued_at = m.now;
                    m.queued.insert(m.next_seq, row);
                    m.next_seq += 1;
                }
            }
            Op::Expire => {
                // Which records go depends on segment boundaries; what must hold is checked
                // by `check_state`: every owed first attempt is still due.
                let st = store.expire(m.now, RETENTION, 100_000).await.unwrap();
                m.deleted += st.events_deleted;
            }
            Op::Reopen => {
                store.close().await.unwrap();
                store = Store::open_tuned(dir.path(), opts.clone(), tuning.clone()).unwrap();
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
