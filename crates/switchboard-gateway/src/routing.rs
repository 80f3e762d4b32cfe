//! Rules → deliveries: the one place an envelope meets the rules.
//!
//! Routing runs on the ingest path, before persistence, so that an event and the deliveries it
//! causes are written in one transaction: once acknowledged, every matching target will get it
//! even if the process dies the next instant. Matching cost grows with the event, not with the
//! number of rules (the compiled matcher of `switchboard-pattern`).

use std::collections::HashMap;

use switchboard_pattern::{Matcher, TransformContext};
use switchboard_store::NewDelivery;

use crate::config::{RetryPolicyConfig, ValidRule};

/// The compiled rule set.
#[derive(Debug)]
pub struct Router {
    matcher: Matcher,
    /// Rules that match every event (no pattern); kept apart because the matcher needs a pattern.
    match_all: Vec<usize>,
    rules: Vec<ValidRule>,
    by_name: HashMap<String, usize>,
    arn_prefix: String,
}

/// Why routing one event failed for one target.
#[derive(Debug)]
pub struct RouteFailure {
    /// Rule name.
    pub rule: String,
    /// Target name.
    pub target: String,
    /// What went wrong.
    pub message: String,
}

impl Router {
    /// Compiles the enabled rules.
    pub fn new(rules: Vec<ValidRule>, region: &str, account: &str) -> Self {
        let mut matcher = Matcher::new();
        let mut match_all = Vec::new();
        let mut by_name = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            by_name.insert(rule.name.clone(), i);
            if !rule.enabled {
                continue;
            }
            match &rule.pattern {
                Some(p) => matcher.add_rule(&rule.name, p),
                None => match_all.push(i),
            }
        }
        Router {
            matcher,
            match_all,
            rules,
            by_name,
            arn_prefix: format!("arn:switchboard:events:{region}:{account}:rule/"),
        }
    }

    /// The rules, in configuration order.
    pub fn rules(&self) -> &[ValidRule] {
        &self.rules
    }

    /// The ARN-style name of a rule, as put in `RULE_ARN` and `<aws.events.rule-arn>`.
    pub fn rule_arn(&self, rule: &str) -> String {
        format!("{}{rule}", self.arn_prefix)
    }

    /// The retry policy of a (rule, target) pair; the default when the rule is gone (redriven
    /// letters may outlive a configuration change).
    pub fn retry_policy(&self, rule: &str, target: &str) -> RetryPolicyConfig {
        self.by_name
            .get(rule)
            .and_then(|&i| self.rules[i].targets.iter().find(|t| t.target == target))
            .map(|t| t.retry)
            .unwrap_or_default()
    }

    /// The SQS dead-letter queue of a (rule, target) pair, if it has one.
    pub fn dead_letter_queue(&self, rule: &str, target: &str) -> Option<&str> {
        self.by_name
            .get(rule)
            .and_then(|&i| self.rules[i].targets.iter().find(|t| t.target == target))
            .and_then(|t| t.dead_letter_queue.as_deref())
    }

    /// Deliveries for one normalized envelope, given as its JSON text (the matcher reads the
    /// fields its rules mention straight from it) and, when the caller has it, as a `Value`
    /// (parsed here only if an input transformer needs one). A delivery of the whole envelope
    /// has no payload of its own: the store keeps the envelope once. Transformation failures are
    /// returned apart so the caller can count and log them; they do not stop the other targets.
    /// `ingestion_time` (RFC 3339) is asked for only for a target with an input of its own
    /// (`Input`, `InputPath`, `InputTransformer`): most rules deliver the matched event and never
    /// pay for formatting it.
    pub fn route(
        &self,
        envelope_json: &str,
        envelope: Option<&serde_json::Value>,
        ingestion_time: &dyn Fn() -> String,
    ) -> (Vec<NewDelivery>, Vec<RouteFailure>) {
        let mut out = Vec::new();
        let mut failures = Vec::new();
        let mut parsed: Option<serde_json::Value> = None;
        let mut ingested: Option<String> = None;
        let matched = if self.matcher.is_empty() {
            // Only rules without a pattern: nothing to read from the event.
            Vec::new()
        } else {
            self.matched(envelope_json, envelope, &mut parsed)
        };
        let indexes = self.match_all.iter().copied().chain(
            matched
                .iter()
                .filter_map(|name| self.by_name.get(*name).copied()),
        );
        for i in indexes {
            let rule = &self.rules[i];
            let rule_arn = self.rule_arn(&rule.name);
            for t in &rule.targets {
                let payload = if matches!(t.input, switchboard_pattern::TargetInput::MatchedEvent) {
                    // Most targets take the whole envelope: the store keeps it once for all.
                    None
                } else {
                    let ctx = TransformContext {
                        rule_name: &rule.name,
                        rule_arn: &rule_arn,
                        ingestion_time: ingested.get_or_insert_with(ingestion_time),
                    };
                    let value = match (envelope, &mut parsed) {
                        (Some(v), _) => v,
                        (None, Some(v)) => &*v,
                        (None, slot @ None) => match serde_json::from_str(envelope_json) {
                            Ok(v) => &*slot.insert(v),
                            Err(e) => {
                                failures.push(RouteFailure {
                                    rule: rule.name.clone(),
                                    target: t.target.clone(),
                                    message: format!("envelope is not JSON: {e}"),
                                });
                                continue;
                            }
                        },
                    };
                    match t.input.apply(value, &ctx) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            failures.push(RouteFailure {
                                rule: rule.name.clone(),
                                target: t.target.clone(),
                                message: e.to_string(),
                            });
                            continue;
                        }
                    }
                };
                out.push(NewDelivery {
                    target: t.target.clone(),
                    rule: rule.name.clone(),
                    payload,
                });
            }
        }
        (out, failures)
    }

    /// Names of the pattern rules `envelope_json` matches.
    fn matched<'a>(
        &'a self,
        envelope_json: &str,
        envelope: Option<&serde_json::Value>,
        parsed: &mut Option<serde_json::Value>,
    ) -> Vec<&'a str> {
        match self.matcher.matches_json(envelope_json.as_bytes()) {
            Ok(m) => m,
            // Our own serialization: not expected, but a parsed tree gives the same answer.
            Err(_) => match envelope {
                Some(v) => self.matcher.matches_value(v),
                None => match serde_json::from_str(envelope_json) {
                    Ok(v) => self.matcher.matches_value(parsed.insert(v)),
                    Err(_) => Vec::new(),
                },
            },
        }
    }
}
