//! Topic templates, their expansion over users and queues, and sharding over channels.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::NotificationConfig;
use crate::client::Client;
use crate::error::{Error, Result};

/// What a template placeholder expands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expand {
    Users,
    Queues,
}

/// Splits a configured topic into (prefix, expansion, suffix), or `None` when concrete.
fn template(topic: &str) -> Result<Option<(&str, Expand, &str)>> {
    let bad = |message: String| Error::Topic {
        topic: topic.to_string(),
        message,
    };
    let Some(open) = topic.find('{') else {
        if topic.contains('}') {
            return Err(bad("unbalanced '}'".into()));
        }
        return Ok(None);
    };
    let close = topic[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| bad("unbalanced '{'".into()))?;
    let (prefix, name, suffix) = (&topic[..open], &topic[open + 1..close], &topic[close + 1..]);
    if suffix.contains(['{', '}']) {
        return Err(bad("only one placeholder is supported per topic".into()));
    }
    let kind = match name {
        "user" => Expand::Users,
        "queue" => Expand::Queues,
        "id" if prefix == "v2.users." => Expand::Users,
        "id" if prefix == "v2.routing.queues." || prefix == "v2.analytics.queues." => {
            Expand::Queues
        }
        "id" => {
            return Err(bad(
                "WebSocket topics need concrete ids and this {id} cannot be enumerated; \
                 use {user} or {queue}, or the EventBridge integration for org-wide topics"
                    .into(),
            ));
        }
        other => {
            return Err(bad(format!(
                "unknown placeholder {{{other}}}; use {{user}} or {{queue}}"
            )));
        }
    };
    Ok(Some((prefix, kind, suffix)))
}

/// Expands templates into concrete topics (sorted, deduplicated).
pub async fn expand_topics(
    client: &Client,
    topics: &[String],
    page_size: u32,
) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Entity {
        id: String,
    }
    let mut users: Option<Vec<String>> = None;
    let mut queues: Option<Vec<String>> = None;
    let mut out = BTreeSet::new();
    for topic in topics {
        let topic = topic.trim();
        match template(topic)? {
            None => {
                out.insert(topic.to_string());
            }
            Some((prefix, kind, suffix)) => {
                let (slot, path) = match kind {
                    Expand::Users => (&mut users, "/api/v2/users"),
                    Expand::Queues => (&mut queues, "/api/v2/routing/queues"),
                };
                if slot.is_none() {
                    let all: Vec<Entity> = client.get_all_pages(path, &[], page_size).await?;
                    *slot = Some(all.into_iter().map(|e| e.id).collect());
                }
                for id in slot.iter().flatten() {
                    out.insert(format!("{prefix}{id}{suffix}"));
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Re-spreads a new topic list over existing shards with as little churn as possible: a
/// topic that stays keeps its shard, a vanished topic is removed, a new topic goes to the
/// first shard with room, and new shards are added only when all are full. Shards whose list
/// is unchanged are not touched (so their channels are not rolled over).
pub fn reshard(
    current: &[Vec<String>],
    topics: &[String],
    config: &NotificationConfig,
) -> Result<Vec<Vec<String>>> {
    let wanted: BTreeSet<&String> = topics.iter().collect();
    let mut out: Vec<Vec<String>> = current
        .iter()
        .map(|s| s.iter().filter(|t| wanted.contains(t)).cloned().collect())
        .collect();
    let placed: BTreeSet<String> = out.iter().flatten().cloned().collect();
    let per_channel = config.max_topics_per_channel;
    let max_channels = config.max_channels.saturating_sub(1);
    for t in topics.iter().filter(|t| !placed.contains(*t)) {
        match out.iter().position(|s| s.len() < per_channel) {
            Some(i) => out[i].push(t.clone()),
            None if out.len() < max_channels => out.push(vec![t.clone()]),
            None => {
                return Err(Error::TooManyTopics {
                    topics: topics.len(),
                    needed: topics.len().div_ceil(per_channel),
                    per_channel,
                    max_channels,
                });
            }
        }
    }
    Ok(out)
}

/// Splits concrete topics over channels, or explains why they do not fit.
pub fn shard_topics(topics: &[String], config: &NotificationConfig) -> Result<Vec<Vec<String>>> {
    config.validate()?;
    let per_channel = config.max_topics_per_channel;
    let needed = topics.len().div_ceil(per_channel);
    // One channel stays free: a rollover creates the new channel before leaving the old one,
    // and a 21st channel would evict one of ours.
    let max_channels = config.max_channels - 1;
    if needed > max_channels {
        return Err(Error::TooManyTopics {
            topics: topics.len(),
            needed,
            per_channel,
            max_channels,
        });
    }
    if topics.is_empty() {
        return Err(Error::Config(
            "the topic templates expanded to no topics".into(),
        ));
    }
    Ok(topics.chunks(per_channel).map(<[String]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let check = |t: &str, expect: std::result::Result<Option<(&str, Expand, &str)>, &str>| {
            let got = template(t);
            match (got, expect) {
                (Ok(g), Ok(e)) => assert_eq!(g, e, "{t}"),
                (Err(g), Err(e)) => assert!(g.to_string().contains(e), "{t}: {g}"),
                (g, e) => panic!("{t}: got {g:?}, expected {e:?}"),
            }
        };
        check("v2.users.abc.presence", Ok(None));
        check(
            "v2.users.{user}.presence",
            Ok(Some(("v2.users.", Expand::Users, ".presence"))),
        );
        check(
            "v2.users.{id}.routingStatus",
            Ok(Some(("v2.users.", Expand::Users, ".routingStatus"))),
        );
        check(
            "v2.routing.queues.{queue}.conversations.calls",
            Ok(Some((
                "v2.routing.queues.",
                Expand::Queues,
                ".conversations.calls",
            ))),
        );
        check(
            "v2.routing.queues.{id}.users",
            Ok(Some(("v2.routing.queues.", Expand::Queues, ".users"))),
        );
        check(
            "v2.analytics.queues.{id}.observations",
            Ok(Some((
                "v2.analytics.queues.",
                Expand::Queues,
                ".observations",
            ))),
        );
        check(
            "v2.detail.events.conversation.{id}.customer.start",
            Err("EventBridge"),
        );
        check("v2.users.{conversation}.x", Err("unknown placeholder"));
        check("v2.users.{user}.{queue}", Err("only one"));
        check("v2.users.{user.x", Err("unbalanced"));
        check("v2.users.user}.x", Err("unbalanced"));
    }

    #[test]
    fn reshard_moves_as_little_as_possible() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut cfg = NotificationConfig::new(vec!["x".into()]);
        cfg.max_topics_per_channel = 2;
        cfg.max_channels = 4; // three shards, one kept free
        let current = vec![t(&["a", "b"]), t(&["c"])];
        let check = |topics: &[&str], expected: Option<Vec<Vec<String>>>| {
            let got = reshard(&current, &t(topics), &cfg).ok();
            assert_eq!(got, expected, "{topics:?}");
        };
        check(&["a", "b", "c"], Some(vec![t(&["a", "b"]), t(&["c"])]));
        check(
            &["a", "b", "c", "d"],
            Some(vec![t(&["a", "b"]), t(&["c", "d"])]),
        );
        check(&["b", "c", "d"], Some(vec![t(&["b", "d"]), t(&["c"])]));
        check(
            &["a", "b", "c", "d", "e"],
            Some(vec![t(&["a", "b"]), t(&["c", "d"]), t(&["e"])]),
        );
        check(&["c"], Some(vec![t(&[]), t(&["c"])]));
        check(&["a", "b", "c", "d", "e", "f", "g"], None);
    }

    #[test]
    fn sharding_limits() {
        let topics: Vec<String> = (0..2500)
            .map(|i| format!("v2.users.{i}.presence"))
            .collect();
        let cfg = NotificationConfig::new(vec!["x".into()]);
        let shards = shard_topics(&topics, &cfg).unwrap();
        assert_eq!(
            shards.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        let many: Vec<String> = (0..19_001).map(|i| format!("t{i}")).collect();
        let err = shard_topics(&many, &cfg).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooManyTopics {
                    needed: 20,
                    max_channels: 19,
                    ..
                }
            ),
            "{err}"
        );
        assert!(shard_topics(&many[..19_000], &cfg).is_ok());
        let mut small = cfg.clone();
        small.max_topics_per_channel = 1001;
        assert!(shard_topics(&topics, &small).is_err());
        small.max_topics_per_channel = 10;
        small.max_channels = 3;
        assert!(matches!(
            shard_topics(&topics[..21], &small),
            Err(Error::TooManyTopics { needed: 3, .. })
        ));
        assert_eq!(shard_topics(&topics[..20], &small).unwrap().len(), 2);
    }
}
