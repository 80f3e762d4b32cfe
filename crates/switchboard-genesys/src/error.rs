//! The crate's one error type.

use std::fmt;
use std::time::Duration;

/// What Genesys said when it refused a request: the HTTP status, its `code` and `message` fields
/// and the `ININ-Correlation-Id` header (quote it to Genesys support).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP method of the failed request.
    pub method: String,
    /// Path (or URL) of the failed request.
    pub path: String,
    /// HTTP status code.
    pub status: u16,
    /// Genesys' machine-readable `code` (for example `too.many.requests.retry.after`), when present.
    pub code: Option<String>,
    /// Genesys' human-readable `message`, or the start of the body when it was not JSON.
    pub message: String,
    /// The `ININ-Correlation-Id` response header, when present.
    pub correlation_id: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: HTTP {}", self.method, self.path, self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(id) = &self.correlation_id {
            write!(f, " (ININ-Correlation-Id {id})")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to Genesys Cloud.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (unknown region, bad URL, impossible limits).
    #[error("invalid Genesys configuration: {0}")]
    Config(String),
    /// Genesys answered with a non-success status (after any retries the policy allows).
    #[error("Genesys API error: {0}")]
    Api(Box<ApiError>),
    /// The login host refused the client credentials or failed to issue a token.
    #[error("Genesys OAuth token request failed: {0}")]
    Auth(Box<ApiError>),
    /// Rate limited and the retry budget is spent.
    #[error(
        "Genesys rate limit: gave up after {attempts} attempts (last Retry-After {retry_after:?}): {error}"
    )]
    RateLimited {
        /// Attempts made, the first included.
        attempts: u32,
        /// The last `Retry-After` Genesys asked for (uncapped).
        retry_after: Duration,
        /// The last 429 answer.
        error: Box<ApiError>,
    },
    /// The request never got an HTTP answer (connect, TLS, timeout).
    #[error("{method} {path}: transport error: {source}")]
    Transport {
        /// HTTP method.
        method: String,
        /// Path or URL.
        path: String,
        /// The underlying client error.
        #[source]
        source: reqwest::Error,
    },
    /// A response body did not have the documented shape.
    #[error("{path}: unexpected response body: {message}")]
    Decode {
        /// Path of the request.
        path: String,
        /// What did not parse.
        message: String,
    },
    /// Provisioning input failed validation; nothing was changed. One line per problem.
    #[error("invalid EventBridge integration settings:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    /// More than one integration matched the configured name.
    #[error(
        "{count} integrations of type amazon-eventbridge-source are named {name:?}; rename or delete the extras"
    )]
    Ambiguous {
        /// The configured name.
        name: String,
        /// How many matched.
        count: usize,
    },
    /// The integration reported `ERROR` (or did not become `ACTIVE` in time).
    #[error("integration {id} did not become ACTIVE: {message}")]
    IntegrationState {
        /// Integration id.
        id: String,
        /// `reportedState.detail.message`, or a timeout note.
        message: String,
    },
    /// The notification topics do not fit in the channels Genesys allows.
    #[error(
        "{topics} topics need {needed} channels of at most {per_channel} topics, but at most {max_channels} are allowed \
         (Genesys allows 20 channels per OAuth client; one is kept free for rollover). \
         Split the topics over several OAuth clients or use the EventBridge integration"
    )]
    TooManyTopics {
        /// Concrete topics after template expansion.
        topics: usize,
        /// Channels they would need.
        needed: usize,
        /// Topics per channel.
        per_channel: usize,
        /// Channels this source may use.
        max_channels: usize,
    },
    /// A topic template could not be expanded.
    #[error("topic {topic:?}: {message}")]
    Topic {
        /// The configured topic.
        topic: String,
        /// Why it was refused.
        message: String,
    },
    /// The WebSocket could not be opened or failed.
    #[error("WebSocket {uri}: {message}")]
    WebSocket {
        /// The `connectUri`.
        uri: String,
        /// What happened.
        message: String,
    },
}

impl Error {
    /// The Genesys answer behind this error, if there is one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) | Error::Auth(e) => Some(e),
            Error::RateLimited { error, .. } => Some(error),
            _ => None,
        }
    }

    /// HTTP status of the Genesys answer behind this error, if any.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|e| e.status)
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
