//! Helpers shared by the integration tests.
#![allow(dead_code)]

use switchboard_store::{DedupClaim, NewDelivery, NewEvent, Store, StoreOptions};

pub fn ev(id: &str, key: Option<&str>, at_ms: i64, targets: &[&str]) -> NewEvent {
    NewEvent {
        id: id.to_string(),
        source: "test".to_string(),
        received_at_ms: at_ms,
        dedup: key.map(|k| DedupClaim {
            key: k.to_string(),
            ttl_ms: 1_000,
        }),
        // Test ids are chosen by the "sender", like a relayed EventBridge envelope's.
        identity_ttl_ms: Some(1_000),
        envelope: format!(r#"{{"id":"{id}","detail":{{}}}}"#),
        deliveries: targets
            .iter()
            .map(|t| NewDelivery {
                target: t.to_string(),
                rule: format!("rule-{t}"),
                payload: Some(format!(r#"{{"id":"{id}","to":"{t}"}}"#)),
            })
            .collect(),
    }
}

pub fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}
