//! Switchboard's connection to Genesys Cloud CX: the Platform API client, provisioning of the
//! Amazon EventBridge integration, and the Notification API WebSocket source.
//!
//! # Brief overview
//! - [`Client`] (`client`, `auth`, `region`): one org's API, by region name or domain, with
//!   OAuth client credentials (one cached token, one refresh at a time), a client-side rate
//!   limiter, `Retry-After`-honouring 429 handling, 5xx retries for idempotent calls and
//!   pagination. Errors are [`Error`], carrying Genesys' `code`, `message` and
//!   `ININ-Correlation-Id`.
//! - [`provision`]: `plan` / `apply` for the `amazon-eventbridge-source` integration, plus the
//!   `topics` listing. `apply` reports each change to an audit callback.
//! - [`notifications`]: [`notifications::NotificationSource`] shards topics over channels,
//!   keeps their WebSockets alive, rolls them over before expiry and hands every event to an
//!   [`notifications::EventSink`] the gateway provides. It records gaps; it never touches
//!   the store or the targets.
//!
//! # Architecture Invariant
//! This crate knows nothing about the gateway, the store or the envelope: it speaks Genesys
//! and hands raw notification messages to a sink. An event counts as taken only once the
//! sink said it is durable.

mod auth;
pub mod client;
mod duration;
pub mod error;
pub mod notifications;
pub mod provision;
mod ratelimit;
pub mod region;

pub use auth::AccessToken;
pub use client::{Client, ClientConfig, EntityListing, WhoAmI};
pub use error::{ApiError, Error, Result};
pub use region::Region;
