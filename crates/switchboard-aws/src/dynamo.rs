//! The shared dedup window in DynamoDB, for several replicas behind one load balancer.
//!
//! A key goes through two states. `claim` writes it *pending* with the replica's owner token and a
//! short lease; the replica then persists the event locally and `commit` turns the key
//! *committed* with the full window. The conditional write is
//! `attribute_not_exists(pk) OR expires_at < :now OR (owner = :me AND state = pending)`:
//! - a committed key is a duplicate (answered 200 by the caller);
//! - a pending key of another replica is *busy*: the caller answers 503 so the sender retries,
//!   because that replica may crash before persisting and the event must not be dropped;
//! - a pending key of our own is re-claimed: we crashed after claiming (DESIGN.md invariant 2);
//! - an expired key (lease or window over) is free. DynamoDB's TTL deletes items only eventually,
//!   so expiry is tested in the condition, never assumed from TTL.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::AwsError;

const STATE_PENDING: &str = "pending";
const STATE_COMMITTED: &str = "committed";

/// The key's attribute names; `expires_at` is the table's TTL attribute.
pub const ATTR_PK: &str = "pk";
/// TTL attribute (epoch seconds).
pub const ATTR_EXPIRES_AT: &str = "expires_at";

/// The dedup table of one replica.
#[derive(Debug, Clone)]
pub struct DynamoDedup {
    client: aws_sdk_dynamodb::Client,
    table: String,
    owner: String,
    lease: Duration,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours to persist (new, expired, or our own pending claim).
    New,
    /// Already persisted by some replica; the envelope id it got.
    Duplicate {
        /// Envelope id of the first copy.
        original_id: String,
    },
    /// Another replica holds a pending claim: retry later.
    Busy,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl DynamoDedup {
    /// `owner` must be stable across restarts of this replica and unique among replicas.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        owner: impl Into<String>,
        lease: Duration,
    ) -> Self {
        DynamoDedup {
            client,
            table: table.into(),
            owner: owner.into(),
            lease,
        }
    }

    /// The owner token.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The item of a claim by this replica; the caller adds the condition.
    fn put_claim(
        &self,
        key: &str,
        state: &str,
        event_id: &str,
        expires_at: i64,
    ) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
        self.client
            .put_item()
            .table_name(&self.table)
            .item(ATTR_PK, s(key))
            .item("owner", s(&self.owner))
            .item("state", s(state))
            .item("event_id", s(event_id))
            .item(ATTR_EXPIRES_AT, n(expires_at))
    }

    /// Claims `key` for the event that would get `event_id`.
    pub async fn claim(&self, key: &str, event_id: &str) -> Result<Claim, AwsError> {
        let now = now_secs();
        let lease = i64::try_from(self.lease.as_secs()).unwrap_or(60).max(1);
        let res = self
            .put_claim(key, STATE_PENDING, event_id, now.saturating_add(lease))
            .condition_expression(
                "attribute_not_exists(pk) OR expires_at < :now OR (#o = :me AND #s = :pending)",
            )
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":pending", s(STATE_PENDING))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Claim::New),
            Err(SdkError::ServiceError(ctx))
                if matches!(ctx.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                self.holder(key).await
            }
            Err(e) => Err(AwsError::call("PutItem", &e)),
        }
    }

    /// Who holds a key whose claim just failed.
    async fn holder(&self, key: &str) -> Result<Claim, AwsError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(ATTR_PK, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::call("GetItem", &e))?;
        let Some(item) = out.item() else {
            // Deleted (released) between the two calls: let the sender retry.
            return Ok(Claim::Busy);
        };
        let text = |k: &str| match item.get(k) {
            Some(AttributeValue::S(v)) => v.as_str(),
            _ => "",
        };
        if text("state") == STATE_COMMITTED {
            Ok(Claim::Duplicate {
                original_id: text("event_id").to_owned(),
            })
        } else {
            Ok(Claim::Busy)
        }
    }

    /// Marks our claim committed for `window`. If another replica took the key over (our lease
    /// ran out), nothing is written: both copies are persisted, a duplicate and never a loss.
    pub async fn commit(
        &self,
        key: &str,
        event_id: &str,
        window: Duration,
    ) -> Result<bool, AwsError> {
        let now = now_secs();
        let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX / 2);
        let res = self
            .put_claim(key, STATE_COMMITTED, event_id, now.saturating_add(window))
            .condition_expression("attribute_not_exists(pk) OR #o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":me", s(&self.owner))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(ctx))
                if matches!(ctx.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(AwsError::call("PutItem", &e)),
        }
    }

    /// Drops our pending claim after the local store refused the event, so the sender's retry
    /// (here or on another replica) is not answered "busy" for a whole lease.
    pub async fn release(&self, key: &str) -> Result<(), AwsError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(ATTR_PK, s(key))
            .condition_expression("#o = :me AND #s = :pending")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":pending", s(STATE_PENDING))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(ctx))
                if ctx.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(e) => Err(AwsError::call("DeleteItem", &e)),
        }
    }

    /// Items of the table by key, for tests and the admin view (a Scan; small tables only).
    pub async fn scan_keys(&self) -> Result<HashMap<String, String>, AwsError> {
        let mut out = HashMap::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| AwsError::call("Scan", &e))?;
            for item in page.items() {
                if let (Some(AttributeValue::S(k)), Some(AttributeValue::S(st))) =
                    (item.get(ATTR_PK), item.get("state"))
                {
                    out.insert(k.clone(), st.clone());
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }
}
