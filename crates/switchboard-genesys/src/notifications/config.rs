//! Configuration of the notification source.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{MAX_CHANNELS, MAX_TOPICS_PER_CHANNEL};
use crate::error::{Error, Result};

/// Configuration of one `genesys-notifications` source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// Concrete topics and templates (see the module docs for `{user}`, `{queue}`, `{id}`).
    pub topics: Vec<String>,
    /// Topics per channel, at most 1,000 (Genesys' limit).
    #[serde(default = "defaults::per_channel")]
    pub max_topics_per_channel: usize,
    /// Channels this source may hold, at most 20 (Genesys' per-OAuth-client limit). One is
    /// kept free so a rollover never evicts a live channel.
    #[serde(default = "defaults::max_channels")]
    pub max_channels: usize,
    /// Roll a channel over this long before it (or the token it was created with) expires.
    #[serde(default = "defaults::rollover", with = "dur")]
    pub rollover_before_expiry: Duration,
    /// Send `{"message":"ping"}` after this much silence (Genesys heartbeats every ~30 s).
    #[serde(default = "defaults::ping_after", with = "dur")]
    pub ping_after_silence: Duration,
    /// Declare the socket dead when nothing arrives this long after a ping.
    #[serde(default = "defaults::pong_timeout", with = "dur")]
    pub pong_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt up to `reconnect_backoff_max`.
    #[serde(default = "defaults::backoff_min", with = "dur")]
    pub reconnect_backoff_min: Duration,
    /// Largest reconnect delay.
    #[serde(default = "defaults::backoff_max", with = "dur")]
    pub reconnect_backoff_max: Duration,
    /// Reconnects to the same `connectUri` before giving up on the channel and creating a new one.
    #[serde(default = "defaults::same_uri_attempts")]
    pub same_uri_attempts: u32,
    /// Keep retrying a transient sink error this long before counting the event as lost.
    #[serde(default = "defaults::sink_retry_limit", with = "dur")]
    pub sink_retry_limit: Duration,
    /// Events read from the sockets but not yet accepted by the sink; bounds memory.
    #[serde(default = "defaults::buffer")]
    pub buffer: usize,
    /// Concurrent `accept` calls (lets a group-committing store batch them).
    #[serde(default = "defaults::sink_concurrency")]
    pub sink_concurrency: usize,
    /// Page size for the users/queues listings.
    #[serde(default = "defaults::page_size")]
    pub page_size: u32,
    /// Re-expand `{user}` / `{queue}` templates this often, so new agents and queues are
    /// picked up; shards whose topic list changed roll over to a new channel (with overlap).
    /// `"0s"` turns it off. Only used when a template is configured.
    #[serde(default = "defaults::refresh_topics", with = "dur")]
    pub refresh_topics_every: Duration,
    /// Timeout for opening a WebSocket.
    #[serde(default = "defaults::connect_timeout", with = "dur")]
    pub connect_timeout: Duration,
}

mod dur {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        crate::duration::deserialize(d)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

mod defaults {
    use std::time::Duration;
    pub fn per_channel() -> usize {
        super::MAX_TOPICS_PER_CHANNEL
    }
    pub fn max_channels() -> usize {
        super::MAX_CHANNELS
    }
    pub fn rollover() -> Duration {
        Duration::from_secs(600)
    }
    pub fn ping_after() -> Duration {
        Duration::from_secs(60)
    }
    pub fn pong_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub fn backoff_min() -> Duration {
        Duration::from_secs(1)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_secs(60)
    }
    pub fn same_uri_attempts() -> u32 {
        3
    }
    pub fn sink_retry_limit() -> Duration {
        Duration::from_secs(600)
    }
    pub fn buffer() -> usize {
        1024
    }
    pub fn sink_concurrency() -> usize {
        16
    }
    pub fn page_size() -> u32 {
        100
    }
    pub fn refresh_topics() -> Duration {
        Duration::from_secs(900)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(15)
    }
}

impl NotificationConfig {
    /// A config for `topics` with every default.
    pub fn new(topics: Vec<String>) -> Self {
        NotificationConfig {
            topics,
            max_topics_per_channel: defaults::per_channel(),
            max_channels: defaults::max_channels(),
            rollover_before_expiry: defaults::rollover(),
            ping_after_silence: defaults::ping_after(),
            pong_timeout: defaults::pong_timeout(),
            reconnect_backoff_min: defaults::backoff_min(),
            reconnect_backoff_max: defaults::backoff_max(),
            same_uri_attempts: defaults::same_uri_attempts(),
            sink_retry_limit: defaults::sink_retry_limit(),
            buffer: defaults::buffer(),
            sink_concurrency: defaults::sink_concurrency(),
            page_size: defaults::page_size(),
            refresh_topics_every: defaults::refresh_topics(),
            connect_timeout: defaults::connect_timeout(),
        }
    }

    /// Checks the limits; does not call Genesys.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.topics.is_empty() {
            problems.push("topics must not be empty".to_string());
        }
        if !(1..=MAX_TOPICS_PER_CHANNEL).contains(&self.max_topics_per_channel) {
            problems.push(format!(
                "max_topics_per_channel must be 1..={MAX_TOPICS_PER_CHANNEL}"
            ));
        }
        if !(2..=MAX_CHANNELS).contains(&self.max_channels) {
            problems.push(format!(
                "max_channels must be 2..={MAX_CHANNELS} (one is kept free for rollover)"
            ));
        }
        if self.buffer == 0 || self.sink_concurrency == 0 || self.page_size == 0 {
            problems.push("buffer, sink_concurrency and page_size must be positive".to_string());
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_max < self.reconnect_backoff_min
        {
            problems.push(
                "reconnect_backoff_min must be positive and at most reconnect_backoff_max"
                    .to_string(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_keys() {
        let c: NotificationConfig = serde_json::from_value(json!({
            "topics": ["v2.users.{user}.presence"], "rollover_before_expiry": "500ms"
        }))
        .unwrap();
        assert_eq!(c.rollover_before_expiry, Duration::from_millis(500));
        assert_eq!(c.max_topics_per_channel, 1000);
        assert!(
            serde_json::from_value::<NotificationConfig>(json!({"topics": [], "topic": 1}))
                .is_err()
        );
    }
}
