//! Provisioning as code for Genesys' Amazon EventBridge integration (`amazon-eventbridge-source`),
//! and the `topics` listing.
//!
//! [`plan`] reads and compares, changing nothing; [`apply`] makes the same comparison and then
//! performs exactly the listed changes, reporting each one to an audit callback after it
//! succeeded. A second `apply` finds nothing to change and sends no PUT or PATCH.
//!
//! The API sequence follows the reference (and Genesys' terraform provider): match by name,
//! `POST /api/v2/integrations`, `GET …/config/current` for `version`, `PUT …/config/current`,
//! `PATCH /api/v2/integrations/{id}` with `intendedState`, then poll `reportedState.code`.
//!
//! ```no_run
//! use switchboard_genesys::provision::{self, ApplyOptions, EventBridgeSpec};
//! # async fn run(client: switchboard_genesys::Client, spec: EventBridgeSpec) -> switchboard_genesys::Result<()> {
//! println!("{}", provision::plan(&client, &spec).await?);
//! let mut audit = Vec::new();
//! let report = provision::apply(&client, &spec, &ApplyOptions::default(), &mut |entry| audit.push(entry)).await?;
//! println!("{}\n{}", report.partner_event_source, report.aws_next_steps);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::client::Client;
use crate::error::{Error, Result};

/// The integration type id.
pub const INTEGRATION_TYPE: &str = "amazon-eventbridge-source";

/// The four properties this module manages; any other property Genesys keeps is preserved.
const MANAGED: [&str; 4] = [
    "awsAccountId",
    "awsAccountRegion",
    "eventSourceSuffix",
    "eventFilter",
];

/// The desired EventBridge integration, as written in the gateway config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBridgeSpec {
    /// Integration name; the integration is matched by this name.
    pub name: String,
    /// 12-digit AWS account that receives the partner event source.
    pub aws_account_id: String,
    /// AWS region code, for example `us-east-1`.
    pub aws_account_region: String,
    /// Partner event source suffix: at most 64 characters of `[A-Za-z0-9._-]`.
    pub event_source_suffix: String,
    /// Topic templates with a literal `{id}`, for example `v2.users.{id}.presence`.
    pub event_filter: Vec<String>,
    /// Free-text notes stored on the integration configuration.
    #[serde(default)]
    pub notes: String,
    /// Desired `intendedState`: `ENABLED` (default) or `DISABLED`.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl EventBridgeSpec {
    /// The properties object sent in the configuration `PUT`.
    fn properties(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("awsAccountId".into(), json!(self.aws_account_id));
        m.insert("awsAccountRegion".into(), json!(self.aws_account_region));
        m.insert("eventSourceSuffix".into(), json!(self.event_source_suffix));
        m.insert("eventFilter".into(), json!(self.event_filter));
        m
    }

    fn intended_state(&self) -> &'static str {
        if self.enabled { "ENABLED" } else { "DISABLED" }
    }
}

/// Checks the properties without calling Genesys; one message per problem.
pub fn validate_local(spec: &EventBridgeSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.name.trim().is_empty() {
        problems.push("name must not be empty".to_string());
    }
    if spec.aws_account_id.len() != 12 || !spec.aws_account_id.bytes().all(|b| b.is_ascii_digit()) {
        problems.push(format!(
            "aws_account_id {:?} must be exactly 12 digits",
            spec.aws_account_id
        ));
    }
    if !is_aws_region(&spec.aws_account_region) {
        problems.push(format!(
            "aws_account_region {:?} is not an AWS region code such as us-east-1",
            spec.aws_account_region
        ));
    }
    let suffix = &spec.event_source_suffix;
    if suffix.is_empty()
        || suffix.len() > 64
        || !suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        problems.push(format!(
            "event_source_suffix {suffix:?} must be 1 to 64 characters of [A-Za-z0-9._-]"
        ));
    }
    if spec.event_filter.is_empty() {
        problems.push("event_filter must list at least one topic".to_string());
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in &spec.event_filter {
        if !seen.insert(t) {
            problems.push(format!("event_filter lists {t:?} twice"));
        }
    }
    problems
}

/// `xx-name-N` or `xx-part-part-N` (for example `us-gov-west-1`).
fn is_aws_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// One topic from `GET /api/v2/notifications/availabletopics?expand=transports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableTopic {
    /// Topic template, for example `v2.users.{id}.presence`.
    pub id: String,
    /// Description, when Genesys gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Transports the topic is published on (for example `Websocket`, `EventBridge`, `All`).
    #[serde(default)]
    pub transports: Vec<String>,
}

impl AvailableTopic {
    /// Whether the EventBridge integration may carry this topic. An empty transport list means
    /// Genesys did not say, and is accepted.
    pub fn eventbridge_eligible(&self) -> bool {
        self.transports.is_empty()
            || self
                .transports
                .iter()
                .any(|t| t.eq_ignore_ascii_case("eventbridge") || t.eq_ignore_ascii_case("all"))
    }
}

/// Available notification topics with their transports; `filter` keeps ids containing it
/// (case-insensitive).
pub async fn topics(client: &Client, filter: Option<&str>) -> Result<Vec<AvailableTopic>> {
    #[derive(Deserialize)]
    struct Listing {
        #[serde(default)]
        entities: Vec<AvailableTopic>,
    }
    let listing: Listing = client
        .get(
            "/api/v2/notifications/availabletopics",
            &[("expand", "transports".to_string())],
        )
        .await?;
    let needle = filter.map(str::to_ascii_lowercase);
    let mut out: Vec<AvailableTopic> = listing
        .entities
        .into_iter()
        .filter(|t| {
            needle
                .as_ref()
                .is_none_or(|n| t.id.to_ascii_lowercase().contains(n))
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Local checks plus the ones that need Genesys: every topic is known to `availabletopics` and
/// allowed on EventBridge, and the integration type's property schema knows the properties we set.
pub async fn validate(client: &Client, spec: &EventBridgeSpec) -> Result<()> {
    let mut problems = validate_local(spec);
    let available = topics(client, None).await?;
    for t in &spec.event_filter {
        match available.iter().find(|a| &a.id == t) {
            None => problems.push(format!(
                "topic {t:?} is not in /api/v2/notifications/availabletopics"
            )),
            Some(a) if !a.eventbridge_eligible() => problems.push(format!(
                "topic {t:?} is not available on EventBridge (transports {:?})",
                a.transports
            )),
            Some(_) => {}
        }
    }
    // The schema is the source of truth for property names; a 404 (older orgs, tests) only
    // means we cannot check.
    let schema_path =
        format!("/api/v2/integrations/types/{INTEGRATION_TYPE}/configschemas/properties");
    match client.get::<Value>(&schema_path, &[]).await {
        Ok(schema) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for key in MANAGED {
                    if !props.contains_key(key) {
                        problems.push(format!(
                            "Genesys' property schema has no {key:?}; the integration type changed"
                        ));
                    }
                }
            }
        }
        Err(e) if e.status() == Some(404) => {
            tracing::warn!("no property schema for {INTEGRATION_TYPE}; skipping the schema check");
        }
        Err(e) => return Err(e),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(problems))
    }
}

/// One change `apply` makes (or `plan` would make).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// `POST /api/v2/integrations`.
    Create {
        /// Integration name.
        name: String,
    },
    /// One field of the configuration differs; all such fields go in one `PUT`.
    Config {
        /// `name`, `notes` or `properties.<key>`.
        field: String,
        /// Current value (`None` when absent).
        from: Option<Value>,
        /// Desired value.
        to: Value,
    },
    /// `PATCH /api/v2/integrations/{id}` with `intendedState`.
    IntendedState {
        /// Current intended state.
        from: Option<String>,
        /// Desired intended state.
        to: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create { name } => {
                write!(f, "+ create integration {name:?} ({INTEGRATION_TYPE})")
            }
            Change::Config {
                field,
                from: None,
                to,
            } => write!(f, "+ {field} = {to}"),
            Change::Config {
                field,
                from: Some(from),
                to,
            } => write!(f, "~ {field}: {from} -> {to}"),
            Change::IntendedState { from, to } => {
                write!(
                    f,
                    "~ intendedState: {} -> {to}",
                    from.as_deref().unwrap_or("(none)")
                )
            }
        }
    }
}

/// What `plan` found. `Display` prints the diff.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Genesys org id.
    pub org_id: String,
    /// Integration name.
    pub name: String,
    /// Id of the matching integration, when it exists.
    pub integration_id: Option<String>,
    /// Its `reportedState.code`, when it exists.
    pub reported_state: Option<String>,
    /// What `apply` would change; empty when up to date.
    pub changes: Vec<Change>,
    /// `aws.partner/genesys.com/cloud/<orgId>/<suffix>`.
    pub partner_event_source: String,
}

impl Plan {
    /// Whether `apply` would change anything.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.integration_id.as_deref().unwrap_or("(new)");
        writeln!(
            f,
            "Genesys org {}: integration {:?} [{id}] ({INTEGRATION_TYPE})",
            self.org_id, self.name
        )?;
        if self.changes.is_empty() {
            writeln!(f, "  no changes")?;
        }
        for c in &self.changes {
            writeln!(f, "  {c}")?;
        }
        if let Some(state) = &self.reported_state {
            writeln!(f, "  reportedState: {state}")?;
        }
        write!(f, "partner event source: {}", self.partner_event_source)
    }
}

/// One audited change, handed to the `apply` callback right after it succeeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// `genesys.integration.create`, `genesys.integration.config` or `genesys.integration.state`.
    pub action: &'static str,
    /// Integration id.
    pub integration_id: String,
    /// Integration name.
    pub name: String,
    /// The change, as JSON.
    pub detail: Value,
}

/// How `apply` waits for `reportedState`.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Time between polls of `GET /api/v2/integrations/{id}`.
    pub poll_interval: Duration,
    /// Give up waiting for `ACTIVE` after this long.
    pub timeout: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            poll_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(120),
        }
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// Integration id.
    pub integration_id: String,
    /// Changes made, in order (empty on an idempotent re-run).
    pub changes: Vec<Change>,
    /// Final `reportedState.code`.
    pub reported_state: Option<String>,
    /// `aws.partner/genesys.com/cloud/<orgId>/<suffix>`.
    pub partner_event_source: String,
    /// What remains to do in AWS, as printable text.
    pub aws_next_steps: String,
}

/// `aws.partner/genesys.com/cloud/<orgId>/<suffix>`.
pub fn partner_event_source(org_id: &str, suffix: &str) -> String {
    format!("aws.partner/genesys.com/cloud/{org_id}/{suffix}")
}

/// The AWS-side steps Genesys cannot do for us.
pub fn aws_next_steps(spec: &EventBridgeSpec, org_id: &str) -> String {
    let source = partner_event_source(org_id, &spec.event_source_suffix);
    let (acct, region) = (&spec.aws_account_id, &spec.aws_account_region);
    format!(
        "What remains on the AWS side (account {acct}, region {region}):\n\
         1. The partner event source {source} is now Pending in Amazon EventBridge > Partner event sources.\n\
         2. Associate it with an event bus (this is what activates it):\n   \
            aws events create-event-bus --region {region} --name {source} --event-source-name {source}\n\
         3. Add rules on that bus (bus ARN arn:aws:events:{region}:{acct}:event-bus/{source}); match the source\n   \
            with {{\"source\":[{{\"prefix\":\"aws.partner/genesys.com\"}}]}} and route on detail-type (the topic template).\n\
         4. Give the rules targets (and DLQs); AWS's retry policy applies from the bus on."
    )
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Integration {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    integration_type: Option<IdRef>,
    #[serde(default)]
    intended_state: Option<String>,
    #[serde(default)]
    reported_state: Option<ReportedState>,
}

#[derive(Debug, Clone, Deserialize)]
struct IdRef {
    id: String,
}

#[derive(Debug, Clone, Deserialize)]
struct ReportedState {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    detail: Option<StateDetail>,
}

#[derive(Debug, Clone, Deserialize)]
struct StateDetail {
    #[serde(default)]
    message: Option<String>,
}

async fn org_id(client: &Client) -> Result<String> {
    #[derive(Deserialize)]
    struct Org {
        id: String,
    }
    Ok(client.get::<Org>("/api/v2/organizations/me", &[]).await?.id)
}

async fn find(client: &Client, name: &str) -> Result<Option<Integration>> {
    let all: Vec<Integration> = client
        .get_all_pages("/api/v2/integrations", &[], 100)
        .await?;
    let mut matching: Vec<Integration> = all
        .into_iter()
        .filter(|i| {
            i.name == name
                && i.integration_type
                    .as_ref()
                    .is_some_and(|t| t.id == INTEGRATION_TYPE)
        })
        .collect();
    match matching.len() {
        0 => Ok(None),
        1 => Ok(matching.pop()),
        count => Err(Error::Ambiguous {
            name: name.to_string(),
            count,
        }),
    }
}

fn config_path(id: &str) -> String {
    format!("/api/v2/integrations/{id}/config/current")
}

/// Field-by-field differences between the current configuration and the spec. `eventFilter`
/// compares as a set: Genesys does not promise to keep its order.
fn config_diff(current: Option<&Value>, spec: &EventBridgeSpec) -> Vec<Change> {
    let mut changes = Vec::new();
    let cur = |ptr: &str| {
        current
            .and_then(|c| c.pointer(ptr))
            .filter(|v| !v.is_null())
            .cloned()
    };
    let name_now = cur("/name");
    if name_now.as_ref().and_then(Value::as_str) != Some(spec.name.as_str()) {
        changes.push(Change::Config {
            field: "name".into(),
            from: name_now,
            to: json!(spec.name),
        });
    }
    for (key, want) in spec.properties() {
        let now = cur(&format!("/properties/{key}"));
        let same = match (&now, &want) {
            (Some(Value::Array(a)), Value::Array(b)) => {
                let mut a: Vec<String> = a.iter().map(Value::to_string).collect();
                let mut b: Vec<String> = b.iter().map(Value::to_string).collect();
                a.sort();
                b.sort();
                a == b
            }
            (Some(a), b) => a == b,
            (None, _) => false,
        };
        if !same {
            changes.push(Change::Config {
                field: format!("properties.{key}"),
                from: now,
                to: want,
            });
        }
    }
    let notes_now = cur("/notes");
    if notes_now.as_ref().and_then(Value::as_str).unwrap_or("") != spec.notes {
        changes.push(Change::Config {
            field: "notes".into(),
            from: notes_now,
            to: json!(spec.notes),
        });
    }
    changes
}

/// Reads Genesys and compares with `spec`; changes nothing. Validates first.
pub async fn plan(client: &Client, spec: &EventBridgeSpec) -> Result<Plan> {
    validate(client, spec).await?;
    let org = org_id(client).await?;
    let existing = find(client, &spec.name).await?;
    let mut changes = Vec::new();
    let (integration_id, reported_state) = match &existing {
        None => {
            changes.push(Change::Create {
                name: spec.name.clone(),
            });
            changes.extend(config_diff(None, spec));
            changes.push(Change::IntendedState {
                from: None,
                to: spec.intended_state().to_string(),
            });
            (None, None)
        }
        Some(i) => {
            let config: Value = client.get(&config_path(&i.id), &[]).await?;
            changes.extend(config_diff(Some(&config), spec));
            if i.intended_state.as_deref() != Some(spec.intended_state()) {
                changes.push(Change::IntendedState {
                    from: i.intended_state.clone(),
                    to: spec.intended_state().to_string(),
                });
            }
            (
                Some(i.id.clone()),
                i.reported_state.as_ref().and_then(|r| r.code.clone()),
            )
        }
    };
    Ok(Plan {
        org_id: org.clone(),
        name: spec.name.clone(),
        integration_id,
        reported_state,
        changes,
        partner_event_source: partner_event_source(&org, &spec.event_source_suffix),
    })
}

/// Makes Genesys match `spec`: the changes [`plan`] lists, each reported to `audit` once done,
/// then waits for `reportedState` `ACTIVE` (when enabled) or fails with Genesys' error message.
pub async fn apply(
    client: &Client,
    spec: &EventBridgeSpec,
    options: &ApplyOptions,
    audit: &mut (dyn FnMut(AuditEntry) + Send),
) -> Result<ApplyReport> {
    let plan = plan(client, spec).await?;
    let mut id = plan.integration_id.clone();
    let mut done = Vec::new();
    let config_changes: Vec<Change> = plan
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Config { .. }))
        .cloned()
        .collect();
    for change in &plan.changes {
        if let Change::Create { name } = change {
            let body = json!({"name": name, "integrationType": {"id": INTEGRATION_TYPE}});
            let created: Integration = client
                .request_as(Method::POST, "/api/v2/integrations", &[], Some(&body))
                .await?;
            audit(AuditEntry {
                action: "genesys.integration.create",
                integration_id: created.id.clone(),
                name: name.clone(),
                detail: json!(change),
            });
            id = Some(created.id);
            done.push(change.clone());
        }
    }
    let id = id.ok_or_else(|| Error::Decode {
        path: "/api/v2/integrations".into(),
        message: "no integration id after create".into(),
    })?;
    if !config_changes.is_empty() {
        put_config(client, &id, spec).await?;
        audit(AuditEntry {
            action: "genesys.integration.config",
            integration_id: id.clone(),
            name: spec.name.clone(),
            detail: json!(config_changes),
        });
        done.extend(config_changes);
    }
    for change in &plan.changes {
        if let Change::IntendedState { to, .. } = change {
            let body = json!({"intendedState": to});
            client
                .request(
                    Method::PATCH,
                    &format!("/api/v2/integrations/{id}"),
                    &[],
                    Some(&body),
                )
                .await?;
            audit(AuditEntry {
                action: "genesys.integration.state",
                integration_id: id.clone(),
                name: spec.name.clone(),
                detail: json!(change),
            });
            done.push(change.clone());
        }
    }
    let reported_state = if spec.enabled {
        Some(wait_active(client, &id, options).await?)
    } else {
        None
    };
    Ok(ApplyReport {
        integration_id: id,
        changes: done,
        reported_state,
        partner_event_source: plan.partner_event_source,
        aws_next_steps: aws_next_steps(spec, &plan.org_id),
    })
}

/// GET the current version, PUT the merged configuration. A 409 means someone else updated it
/// between our GET and PUT: read again and retry, a few times.
async fn put_config(client: &Client, id: &str, spec: &EventBridgeSpec) -> Result<()> {
    const ATTEMPTS: u32 = 3;
    let path = config_path(id);
    for attempt in 1..=ATTEMPTS {
        let current: Value = client.get(&path, &[]).await?;
        let version = current.get("version").cloned().unwrap_or(json!(1));
        let mut properties = current
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        properties.extend(spec.properties());
        let keep = |k: &str| {
            current
                .get(k)
                .filter(|v| v.is_object())
                .cloned()
                .unwrap_or(json!({}))
        };
        let body = json!({
            "name": spec.name,
            "version": version,
            "properties": properties,
            "advanced": keep("advanced"),
            "notes": spec.notes,
            "credentials": keep("credentials"),
        });
        match client.request(Method::PUT, &path, &[], Some(&body)).await {
            Ok(_) => return Ok(()),
            Err(e) if e.status() == Some(409) && attempt < ATTEMPTS => {
                tracing::warn!(
                    integration = id,
                    "configuration version conflict; re-reading"
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn wait_active(client: &Client, id: &str, options: &ApplyOptions) -> Result<String> {
    let deadline = Instant::now() + options.timeout;
    loop {
        let i: Integration = client
            .get(&format!("/api/v2/integrations/{id}"), &[])
            .await?;
        let state = i.reported_state.unwrap_or(ReportedState {
            code: None,
            detail: None,
        });
        match state.code.as_deref() {
            Some("ACTIVE") => return Ok("ACTIVE".into()),
            Some("ERROR") => {
                let message = state
                    .detail
                    .and_then(|d| d.message)
                    .unwrap_or_else(|| "reportedState ERROR".into());
                return Err(Error::IntegrationState {
                    id: id.to_string(),
                    message,
                });
            }
            other => {
                if Instant::now() >= deadline {
                    return Err(Error::IntegrationState {
                        id: id.to_string(),
                        message: format!(
                            "still {} after {:?}",
                            other.unwrap_or("(no state)"),
                            options.timeout
                        ),
                    });
                }
            }
        }
        tokio::time::sleep(options.poll_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EventBridgeSpec {
        EventBridgeSpec {
            name: "cx".into(),
            aws_account_id: "123456789012".into(),
            aws_account_region: "us-east-1".into(),
            event_source_suffix: "cx-gateway.dev_1".into(),
            event_filter: vec!["v2.users.{id}.presence".into()],
            notes: String::new(),
            enabled: true,
        }
    }

    #[test]
    fn local_validation() {
        let check = |edit: fn(&mut EventBridgeSpec), expect_problem: Option<&str>| {
            let mut s = spec();
            edit(&mut s);
            let problems = validate_local(&s);
            match expect_problem {
                None => assert!(problems.is_empty(), "{problems:?}"),
                Some(p) => assert!(
                    problems.iter().any(|x| x.contains(p)),
                    "{problems:?} lacks {p}"
                ),
            }
        };
        check(|_| {}, None);
        check(|s| s.aws_account_region = "us-gov-west-1".into(), None);
        check(|s| s.aws_account_region = "ap-southeast-2".into(), None);
        check(|s| s.event_source_suffix = "a".repeat(64), None);
        check(
            |s| s.aws_account_id = "12345678901".into(),
            Some("12 digits"),
        );
        check(
            |s| s.aws_account_id = "12345678901a".into(),
            Some("12 digits"),
        );
        check(
            |s| s.aws_account_region = "us_east_1".into(),
            Some("region"),
        );
        check(
            |s| s.aws_account_region = "US-EAST-1".into(),
            Some("region"),
        );
        check(|s| s.aws_account_region = "us-east".into(), Some("region"));
        check(|s| s.event_source_suffix = "a".repeat(65), Some("64"));
        check(|s| s.event_source_suffix = "a/b".into(), Some("64"));
        check(|s| s.event_source_suffix = String::new(), Some("64"));
        check(|s| s.event_filter.clear(), Some("at least one"));
        check(
            |s| s.event_filter.push("v2.users.{id}.presence".into()),
            Some("twice"),
        );
        check(|s| s.name = " ".into(), Some("name"));
    }

    #[test]
    fn diff_ignores_filter_order_and_keeps_unmanaged() {
        let mut s = spec();
        s.event_filter = vec!["a".into(), "b".into()];
        let current = json!({"name":"cx","version":3,"notes":"","properties":{
            "awsAccountId":"123456789012","awsAccountRegion":"us-east-1",
            "eventSourceSuffix":"cx-gateway.dev_1","eventFilter":["b","a"],"other":true}});
        assert!(config_diff(Some(&current), &s).is_empty());
        s.aws_account_region = "eu-west-1".into();
        let d = config_diff(Some(&current), &s);
        assert_eq!(
            d,
            vec![Change::Config {
                field: "properties.awsAccountRegion".into(),
                from: Some(json!("us-east-1")),
                to: json!("eu-west-1")
            }]
        );
        assert_eq!(
            d[0].to_string(),
            r#"~ properties.awsAccountRegion: "us-east-1" -> "eu-west-1""#
        );
    }

    #[test]
    fn source_name() {
        assert_eq!(
            partner_event_source("org", "sfx"),
            "aws.partner/genesys.com/cloud/org/sfx"
        );
        assert!(
            aws_next_steps(&spec(), "org")
                .contains("--event-source-name aws.partner/genesys.com/cloud/org/cx-gateway.dev_1")
        );
    }
}
