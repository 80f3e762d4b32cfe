//! The Switchboard event model: the EventBridge envelope and how inputs become one.
//!
//! # Brief overview
//! Everything inside Switchboard is the envelope Genesys Cloud's own Amazon EventBridge
//! integration produces, so a rule written for Switchboard also works on a real partner bus:
//! ```text
//! {"version":"0","id":"<uuid>","detail-type":"<topic template>","source":"…","account":"…",
//!  "time":"<RFC 3339 seconds>","region":"…","resources":[],
//!  "detail":{"topicName":"<concrete topic>","version":"2","eventBody":{…},
//!            "metadata":{"CorrelationId":"…"},"timestamp":"<RFC 3339 ms>"}}
//! ```
//! - [`normalize`] recognises the input shape ([`InputShape`]: EventBridge envelope, Genesys
//!   Notification message, flat webhook), wraps it, and picks a namespaced dedup key, driven by
//!   per-source [`NormalizeOptions`] (TOML-deserializable; [`NormalizeOptions::validate`] at load).
//! - [`normalize_text`] is its fast path for Genesys Notification messages: the envelope text
//!   written around the body's members, without building a `Value` tree.
//! - [`topic_template`] maps concrete Genesys topics to `{id}` templates (the `detail-type`).
//! - [`check_json_depth`] refuses deeply nested JSON in one byte scan, before serde runs.
//! - [`put_events_entry_size`] is AWS' PutEvents entry-size formula.
//!
//! # Architecture invariant
//! This crate does no I/O, spawns nothing and reads no clock or randomness: ids and receive
//! times come in through [`NormalizeContext`]. No input makes it panic.

mod claim;
mod depth;
mod normalize;
mod options;
mod path;
mod size;
pub mod template;
mod text;
mod timefmt;
mod topic;

pub use claim::{ClaimCheck, claim_check_stub, sha256_hex};
pub use depth::{DepthError, check_json_depth};
pub use normalize::{
    InputShape, MAX_DETAIL_TYPE_CHARS, NormalizeContext, NormalizeError, Normalized, normalize,
};
pub use options::{DedupKeyMode, EnvelopeDefaults, NormalizeOptions, OptionsError};
pub use path::PathError;
pub use size::{PUT_EVENTS_TIME_BYTES, envelope_entry_size, put_events_entry_size};
pub use text::{NormalizedText, normalize_text};
pub use topic::{CHANNEL_METADATA_TOPIC, is_channel_metadata, topic_template};
