//! OAuth client credentials: one cached token, refreshed ahead of expiry, one fetch at a time.

use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::Mutex;

/// A bearer token and when it stops working.
#[derive(Clone)]
pub struct AccessToken {
    /// The bearer secret. Never logged: `Debug` redacts it.
    pub secret: String,
    /// Monotonic expiry, used for every decision.
    pub expires_at: Instant,
    /// Wall-clock expiry, for display (`whoami`).
    pub expires_at_utc: OffsetDateTime,
}

impl AccessToken {
    /// Time left before Genesys stops accepting this token.
    pub fn remaining(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_at_utc", &self.expires_at_utc)
            .finish()
    }
}

/// The `POST /oauth/token` answer.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    #[allow(dead_code)] // Kept to document the shape; it is always "bearer".
    pub token_type: Option<String>,
    pub expires_in: u64,
}

/// The cache. The tokio mutex is held across the token request on purpose: however many tasks
/// find the token stale at once, exactly one request goes to the login host and the others wait
/// for its answer instead of each asking for (and rate-limiting themselves on) their own token.
pub(crate) struct TokenCache {
    current: Mutex<Option<AccessToken>>,
    /// Number of tokens fetched so far (for tests and `whoami`).
    fetches: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    pub fn new() -> Self {
        TokenCache {
            current: Mutex::new(None),
            fetches: Default::default(),
        }
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns a token valid for at least `min_validity`, fetching one with `fetch` if needed.
    pub async fn get<F, Fut>(&self, min_validity: Duration, fetch: F) -> crate::Result<AccessToken>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = crate::Result<TokenResponse>>,
    {
        let mut guard = self.current.lock().await;
        if let Some(tok) = guard.as_ref()
            && tok.remaining() > min_validity
        {
            return Ok(tok.clone());
        }
        let before = Instant::now();
        let before_utc = OffsetDateTime::now_utc();
        let resp = fetch().await?;
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Count the lifetime from when we asked, not when the answer arrived, so we never
        // believe a token lives longer than Genesys does.
        let life = Duration::from_secs(resp.expires_in);
        let tok = AccessToken {
            secret: resp.access_token,
            expires_at: before + life,
            expires_at_utc: before_utc + life,
        };
        *guard = Some(tok.clone());
        Ok(tok)
    }

    /// Forgets `stale` (after a 401) unless another task already replaced it.
    pub async fn invalidate(&self, stale: &str) {
        let mut guard = self.current.lock().await;
        if guard.as_ref().is_some_and(|t| t.secret == stale) {
            *guard = None;
        }
    }

    /// The cached token, without fetching.
    pub async fn peek(&self) -> Option<AccessToken> {
        self.current.lock().await.clone()
    }
}

/// `Authorization: Basic base64(client_id:client_secret)`.
pub(crate) fn basic_header(client_id: &str, client_secret: &str) -> String {
    let raw = format!("{client_id}:{client_secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}
