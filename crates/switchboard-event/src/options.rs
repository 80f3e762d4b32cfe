//! Per-source normalizer configuration, deserializable from the gateway's TOML.
//!
//! ```toml
//! [sources.genesys.normalize]
//! dedup_key = "auto"                  # or "none", "body-hash", or { template = "…" }
//! detail_type_path = "$.kind"         # optional
//! time_path = "eventBody.eventTime"   # optional
//! [sources.genesys.normalize.defaults]
//! source = "genesys.cloud"
//! account = "000000000000"
//! region = "local"
//! ```
//! `defaults` is a nested table (serde cannot combine `flatten` with `deny_unknown_fields`).

use serde::Deserialize;

use crate::path::{FieldPath, KeyTemplate, PathError};

/// Envelope fields that come from configuration rather than from the event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvelopeDefaults {
    /// `source` of wrapped events. Set it to `aws.partner/genesys.com/cloud/<orgId>/<suffix>`
    /// to make rules portable to a real Genesys partner bus.
    pub source: String,
    /// `account` of wrapped events (12 digits).
    pub account: String,
    /// `region` of wrapped events.
    pub region: String,
}

impl Default for EnvelopeDefaults {
    fn default() -> Self {
        Self {
            source: "genesys.cloud".to_owned(),
            account: "000000000000".to_owned(),
            region: "local".to_owned(),
        }
    }
}

/// How the dedup key is chosen. Every mode except `None` first tries, in order, the provider
/// delivery id (`wh:`), then `topicName` + `metadata.CorrelationId` (`corr:`), then for
/// EventBridge input the envelope `id` (`eb:`); the mode only decides the last resort.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum DedupKeyMode {
    /// No last resort: an event without a provider or Genesys id gets no key (never deduplicated).
    #[default]
    Auto,
    /// Last resort: SHA-256 of the rendered template (`tpl:`), e.g.
    /// `{conversationId}:{eventType}:{timestamp}`. Placeholders are field paths into the input
    /// body as received; if one is missing or null the event gets no key.
    Template(String),
    /// Last resort: SHA-256 of the compact JSON body (`body:`). Only when configured: identical
    /// bodies (pings, retries of a "nothing changed" event) are then dropped as duplicates.
    BodyHash,
    /// Never deduplicate.
    None,
}

/// Per-source normalizer configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormalizeOptions {
    /// Envelope fields taken from config (nested table `defaults`).
    pub defaults: EnvelopeDefaults,
    /// Dedup key policy.
    pub dedup_key: DedupKeyMode,
    /// Field path in the input whose string value becomes `detail-type` for Notification and
    /// flat input, and which makes other objects acceptable. Ignored for EventBridge input, whose
    /// `detail-type` passes through.
    pub detail_type_path: Option<String>,
    /// Field path in the input whose value becomes `time` (RFC 3339 string, or epoch number:
    /// milliseconds, or seconds when below 10^11). When missing or unparseable the receive time
    /// is used, because rejecting events over a drifted time field would lose them.
    pub time_path: Option<String>,
}

/// A [`NormalizeOptions`] value that cannot work; reported when config loads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// A path or template option does not parse.
    #[error("normalize option `{option}`: {source}")]
    Path {
        /// Option name (`detail_type_path`, `time_path`, `dedup_key.template`).
        option: &'static str,
        /// What is wrong with it.
        source: PathError,
    },
    /// `defaults.source` is empty or longer than AWS' 256 characters.
    #[error("normalize option `defaults.source` must be 1 to 256 characters")]
    Source,
    /// `defaults.account` is not 12 ASCII digits.
    #[error("normalize option `defaults.account` must be 12 digits, got {0:?}")]
    Account(String),
    /// `defaults.region` is empty.
    #[error("normalize option `defaults.region` must not be empty")]
    Region,
}

/// Options parsed once, so per-event work does not reparse paths.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) detail_type_path: Option<FieldPath>,
    pub(crate) time_path: Option<FieldPath>,
    pub(crate) template: Option<KeyTemplate>,
}

impl NormalizeOptions {
    /// Checks every option; call it when config loads so that [`crate::normalize`] never meets a
    /// bad path at run time (where a bad path is ignored as if unset).
    pub fn validate(&self) -> Result<(), OptionsError> {
        let d = &self.defaults;
        if d.source.is_empty() || d.source.chars().count() > 256 {
            return Err(OptionsError::Source);
        }
        if d.account.len() != 12 || !d.account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OptionsError::Account(d.account.clone()));
        }
        if d.region.is_empty() {
            return Err(OptionsError::Region);
        }
        self.compile().map(|_| ())
    }

    pub(crate) fn compile(&self) -> Result<Compiled, OptionsError> {
        let path = |option: &'static str, p: &Option<String>| {
            p.as_deref()
                .map(FieldPath::parse)
                .transpose()
                .map_err(|source| OptionsError::Path { option, source })
        };
        let template = match &self.dedup_key {
            DedupKeyMode::Template(t) => {
                Some(KeyTemplate::parse(t).map_err(|source| OptionsError::Path {
                    option: "dedup_key.template",
                    source,
                })?)
            }
            _ => None,
        };
        Ok(Compiled {
            detail_type_path: path("detail_type_path", &self.detail_type_path)?,
            time_path: path("time_path", &self.time_path)?,
            template,
        })
    }

    /// Like [`compile`](Self::compile) but a bad option counts as unset: `normalize` must not fail
    /// an event over config that [`validate`](Self::validate) would have refused at load.
    pub(crate) fn compile_lenient(&self) -> Compiled {
        let path = |p: &Option<String>| p.as_deref().and_then(|p| FieldPath::parse(p).ok());
        Compiled {
            detail_type_path: path(&self.detail_type_path),
            time_path: path(&self.time_path),
            template: match &self.dedup_key {
                DedupKeyMode::Template(t) => KeyTemplate::parse(t).ok(),
                _ => None,
            },
        }
    }
}
