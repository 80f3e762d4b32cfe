//! The Platform API client: base URLs, OAuth, retries, rate limiting, pagination.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::{AccessToken, TokenCache, TokenResponse, basic_header};
use crate::error::{ApiError, Error, Result};
use crate::ratelimit::RateLimiter;
use crate::region::Region;

/// Largest number of pages [`Client::get_all_pages`] follows; a guard against a server that
/// never reports the last page.
pub const MAX_PAGES: u32 = 10_000;

/// How to reach and authenticate to one Genesys Cloud org. Deserializable from the gateway's
/// TOML; every field but the credentials has a default.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Region by SDK name (`eu_west_1`) or domain (`mypurecloud.ie`). Required unless
    /// `api_base_url` is set.
    #[serde(default)]
    pub region: Option<String>,
    /// Overrides the API base URL (tests, private deployments), for example `http://127.0.0.1:8080`.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Overrides the login base URL. Defaults to the region's `login.` host, or to
    /// `api_base_url` with `api.` replaced by `login.`.
    #[serde(default)]
    pub login_base_url: Option<String>,
    /// OAuth client id (client-credentials grant). May be left out of the file and filled in
    /// by the caller (from the environment); [`Client::new`] refuses an empty one.
    #[serde(default)]
    pub client_id: String,
    /// OAuth client secret. Never logged: `Debug` redacts it. Like `client_id`, the caller
    /// should fill it from the environment or a file rather than the config file.
    #[serde(default)]
    pub client_secret: String,
    /// Requests allowed per `rate_limit_window`; keep it at or below Genesys' per-token limit
    /// (300 per minute), lower when several processes share one token.
    #[serde(default = "defaults::rate_limit")]
    pub rate_limit: u32,
    /// Window of the client-side limiter (default 60 s).
    #[serde(
        default = "defaults::minute",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub rate_limit_window: Duration,
    /// Longest we sleep for one 429's `Retry-After` (default 180 s, as the .NET SDK). Longer
    /// values (daily limits) are clamped to this, then the retry budget decides.
    #[serde(
        default = "defaults::retry_after_cap",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub retry_after_cap: Duration,
    /// Wait for a 429 without `Retry-After` (default 3 s, as the .NET SDK).
    #[serde(
        default = "defaults::retry_after_default",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub retry_after_default: Duration,
    /// First back-off step for 502/503/504 on idempotent calls; then ×3 each try (3 s, 9 s, 27 s).
    #[serde(
        default = "defaults::backoff_base",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub backoff_base: Duration,
    /// Retries after the first attempt (429, 5xx, connection failures). Default 5.
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// A token closer than this to its expiry is replaced before use (default 5 min).
    #[serde(
        default = "defaults::refresh_ahead",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub token_refresh_ahead: Duration,
    /// Per-request timeout (default 30 s).
    #[serde(
        default = "defaults::request_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub request_timeout: Duration,
}

mod defaults {
    use std::time::Duration;
    pub fn rate_limit() -> u32 {
        300
    }
    pub fn minute() -> Duration {
        Duration::from_secs(60)
    }
    pub fn retry_after_cap() -> Duration {
        Duration::from_secs(180)
    }
    pub fn retry_after_default() -> Duration {
        Duration::from_secs(3)
    }
    pub fn backoff_base() -> Duration {
        Duration::from_secs(3)
    }
    pub fn max_retries() -> u32 {
        5
    }
    pub fn refresh_ahead() -> Duration {
        Duration::from_secs(300)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
}

impl ClientConfig {
    /// A config for `region` with every default.
    pub fn new(
        region: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        ClientConfig {
            region: Some(region.to_string()),
            api_base_url: None,
            login_base_url: None,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            rate_limit: defaults::rate_limit(),
            rate_limit_window: defaults::minute(),
            retry_after_cap: defaults::retry_after_cap(),
            retry_after_default: defaults::retry_after_default(),
            backoff_base: defaults::backoff_base(),
            max_retries: defaults::max_retries(),
            token_refresh_ahead: defaults::refresh_ahead(),
            request_timeout: defaults::request_timeout(),
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("region", &self.region)
            .field("api_base_url", &self.api_base_url)
            .field("login_base_url", &self.login_base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_window", &self.rate_limit_window)
            .field("retry_after_cap", &self.retry_after_cap)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// One page of a Genesys entity listing (`pageNumber` / `pageCount` style).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityListing<T> {
    /// The entities on this page.
    #[serde(default = "Vec::new")]
    pub entities: Vec<T>,
    /// 1-based page number.
    #[serde(default)]
    pub page_number: Option<u32>,
    /// Page size used.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Total number of pages.
    #[serde(default)]
    pub page_count: Option<u32>,
    /// Total number of entities.
    #[serde(default)]
    pub total: Option<u64>,
}

/// Who the client is talking as (`switchboard genesys whoami`).
#[derive(Debug, Clone, Serialize)]
pub struct WhoAmI {
    /// Organization id (used in the EventBridge partner source name).
    pub org_id: String,
    /// Organization name.
    pub org_name: String,
    /// SDK region name, when the client was configured by region.
    pub region: Option<String>,
    /// API base URL in use.
    pub api_base_url: String,
    /// When the current access token expires.
    #[serde(with = "time::serde::rfc3339")]
    pub token_expires_at: OffsetDateTime,
}

/// A Genesys Cloud Platform API client. Cheap to clone; clones share the token cache and the
/// rate limiter, which is what makes "one refresh at a time" and the per-token limit hold.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api_base: String,
    login_base: String,
    region: Option<Region>,
    cfg: ClientConfig,
    tokens: TokenCache,
    limiter: RateLimiter,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("api_base", &self.inner.api_base)
            .finish_non_exhaustive()
    }
}

fn normalize_base(url: &str) -> Result<String> {
    let parsed =
        url::Url::parse(url).map_err(|e| Error::Config(format!("bad base URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::Config(format!(
            "base URL {url:?} must be http(s)://host"
        )));
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl Client {
    /// Builds a client; no network traffic until the first call.
    pub fn new(cfg: ClientConfig) -> Result<Client> {
        if cfg.client_id.is_empty() || cfg.client_secret.is_empty() {
            return Err(Error::Config(
                "client_id and client_secret are required".into(),
            ));
        }
        let region = match (&cfg.region, &cfg.api_base_url) {
            (Some(r), _) => Some(Region::parse(r)?),
            // An API URL on a known Genesys host still tells us the region (for `whoami`).
            (None, Some(u)) => url::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().and_then(|h| Region::parse(h).ok())),
            (None, None) => None,
        };
        let api_base = match (&cfg.api_base_url, region) {
            (Some(u), _) => normalize_base(u)?,
            (None, Some(r)) => r.api_base_url(),
            (None, None) => return Err(Error::Config("set region or api_base_url".into())),
        };
        let login_base = match (&cfg.login_base_url, region, &cfg.api_base_url) {
            (Some(u), _, _) => normalize_base(u)?,
            (None, Some(r), None) => r.login_base_url(),
            _ => normalize_base(&api_base.replacen("://api.", "://login.", 1))?,
        };
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .user_agent(concat!("switchboard-genesys/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                api_base,
                login_base,
                region,
                tokens: TokenCache::new(),
                limiter: RateLimiter::new(cfg.rate_limit, cfg.rate_limit_window),
                cfg,
            }),
        })
    }

    /// The region, when configured by region.
    pub fn region(&self) -> Option<Region> {
        self.inner.region
    }

    /// API base URL without a trailing slash.
    pub fn api_base_url(&self) -> &str {
        &self.inner.api_base
    }

    /// Login base URL without a trailing slash.
    pub fn login_base_url(&self) -> &str {
        &self.inner.login_base
    }

    /// A token valid for at least the configured refresh-ahead margin.
    pub async fn token(&self) -> Result<AccessToken> {
        self.token_valid_for(self.inner.cfg.token_refresh_ahead)
            .await
    }

    /// A token valid for at least `min_validity`; fetches a new one if the cached one is
    /// closer to expiry. Notification channels use this: a channel dies with its token.
    pub async fn token_valid_for(&self, min_validity: Duration) -> Result<AccessToken> {
        self.inner
            .tokens
            .get(min_validity, || self.fetch_token())
            .await
    }

    /// How many tokens this client has fetched from the login host.
    pub fn tokens_fetched(&self) -> u64 {
        self.inner.tokens.fetches()
    }

    /// The cached token, if any, without fetching.
    pub async fn cached_token(&self) -> Option<AccessToken> {
        self.inner.tokens.peek().await
    }

    async fn fetch_token(&self) -> Result<TokenResponse> {
        let url = format!("{}/oauth/token", self.inner.login_base);
        let basic = basic_header(&self.inner.cfg.client_id, &self.inner.cfg.client_secret);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let sent = self
                .inner
                .http
                .post(&url)
                .header(AUTHORIZATION, &basic)
                .header(ACCEPT, "application/json")
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e)
                    if attempt <= self.inner.cfg.max_retries
                        && (e.is_connect() || e.is_timeout()) =>
                {
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(source) => {
                    return Err(Error::Transport {
                        method: "POST".into(),
                        path: url,
                        source,
                    });
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.map_err(|source| Error::Transport {
                method: "POST".into(),
                path: url.clone(),
                source,
            })?;
            if status.is_success() {
                return serde_json::from_slice(&body).map_err(|e| Error::Decode {
                    path: "/oauth/token".into(),
                    message: e.to_string(),
                });
            }
            let err = api_error("POST", "/oauth/token", status, &headers, &body);
            if let Some(wait) = self.retry_wait(status, &headers, attempt, true) {
                tracing::warn!(
                    status = status.as_u16(),
                    ?wait,
                    "Genesys token request throttled or failed; retrying"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(Error::Auth(Box::new(err)));
        }
    }

    /// How long to wait before retrying this answer, or `None` if it must not be retried.
    fn retry_wait(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        attempt: u32,
        idempotent: bool,
    ) -> Option<Duration> {
        if attempt > self.inner.cfg.max_retries {
            return None;
        }
        match status.as_u16() {
            // A 429 means Genesys did not process the request, so even a POST may be repeated.
            429 => {
                let asked = retry_after(headers).unwrap_or(self.inner.cfg.retry_after_default);
                let base = asked.min(self.inner.cfg.retry_after_cap);
                // Jitter only ever adds: waking early would just earn another 429.
                let extra = rand::rng().random_range(0.0..=0.2);
                Some(base.mul_f64(1.0 + extra))
            }
            502..=504 if idempotent => {
                let backoff = self.backoff(attempt);
                let asked = retry_after(headers).map(|d| d.min(self.inner.cfg.retry_after_cap));
                Some(asked.map_or(backoff, |a| a.max(backoff)))
            }
            _ => None,
        }
    }

    /// 3^(attempt-1) × base with ±20 % jitter, capped at 5 minutes.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .inner
            .cfg
            .backoff_base
            .saturating_mul(3u32.saturating_pow(attempt.saturating_sub(1)));
        let step = step.min(Duration::from_secs(300));
        step.mul_f64(rand::rng().random_range(0.8..=1.2))
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.inner.api_base, path)
        }
    }

    /// Sends one API call with the full policy (rate limit, token, 401 refresh, 429, 5xx) and
    /// returns the JSON body (`Value::Null` when empty).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let url = self.url(path);
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            self.inner.limiter.acquire().await;
            let token = self.token().await?;
            let mut rb = self
                .inner
                .http
                .request(method.clone(), &url)
                .bearer_auth(&token.secret)
                .header(ACCEPT, "application/json");
            if !query.is_empty() {
                rb = rb.query(query);
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                // A refused connection never reached Genesys, so any method may be repeated;
                // a timeout might have, so only idempotent ones are.
                Err(e)
                    if attempt <= self.inner.cfg.max_retries
                        && (e.is_connect() || (idempotent && e.is_timeout())) =>
                {
                    tracing::warn!(%method, path, error = %e, "Genesys request failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(source) => {
                    return Err(Error::Transport {
                        method: method.to_string(),
                        path: path.to_string(),
                        source,
                    });
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.map_err(|source| Error::Transport {
                method: method.to_string(),
                path: path.to_string(),
                source,
            })?;
            metrics::counter!("switchboard_genesys_api_responses_total", "status" => status.as_u16().to_string())
                .increment(1);
            if status.is_success() {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Value::Null);
                }
                return serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
                    path: path.to_string(),
                    message: e.to_string(),
                });
            }
            let err = api_error(method.as_str(), path, status, &headers, &bytes);
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                // The token may have been revoked or expired early: one new token, one retry.
                refreshed = true;
                attempt -= 1;
                self.inner.tokens.invalidate(&token.secret).await;
                continue;
            }
            if let Some(wait) = self.retry_wait(status, &headers, attempt, idempotent) {
                if status == StatusCode::TOO_MANY_REQUESTS {
                    self.inner
                        .limiter
                        .pause_until(tokio::time::Instant::now() + wait);
                }
                tracing::warn!(
                    %method, path, status = status.as_u16(), code = ?err.code,
                    correlation_id = ?err.correlation_id, ?wait, "Genesys asked us to retry"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                return Err(Error::RateLimited {
                    attempts: attempt,
                    retry_after: retry_after(&headers)
                        .unwrap_or(self.inner.cfg.retry_after_default),
                    error: Box::new(err),
                });
            }
            return Err(Error::Api(Box::new(err)));
        }
    }

    /// `request` + typed decoding.
    pub async fn request_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<T> {
        let v = self.request(method, path, query, body).await?;
        serde_json::from_value(v).map_err(|e| Error::Decode {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// `GET path` decoded as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        self.request_as(Method::GET, path, query, None).await
    }

    /// Every entity of a `pageNumber`/`pageCount` listing, page by page (stops at `pageCount`,
    /// or at a short/empty page when the listing has no `pageCount`).
    pub async fn get_all_pages<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        page_size: u32,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("pageSize", page_size.to_string()));
            q.push(("pageNumber", page.to_string()));
            let listing: EntityListing<T> = self.get(path, &q).await?;
            let n = listing.entities.len();
            out.extend(listing.entities);
            let last = match listing.page_count {
                Some(count) => page >= count,
                None => n == 0 || n < page_size as usize,
            };
            if last {
                return Ok(out);
            }
        }
        Err(Error::Decode {
            path: path.to_string(),
            message: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// Org, region and token expiry.
    pub async fn whoami(&self) -> Result<WhoAmI> {
        #[derive(Deserialize)]
        struct Org {
            id: String,
            #[serde(default)]
            name: String,
        }
        let org: Org = self.get("/api/v2/organizations/me", &[]).await?;
        let token = self.token().await?;
        Ok(WhoAmI {
            org_id: org.id,
            org_name: org.name,
            region: self.inner.region.map(|r| r.name().to_string()),
            api_base_url: self.inner.api_base.clone(),
            token_expires_at: token.expires_at_utc,
        })
    }
}

/// `Retry-After` in seconds (Genesys sends whole seconds).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: f64 = v.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

fn api_error(
    method: &str,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiError {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    let parsed: Option<Body> = serde_json::from_slice(body).ok();
    let (code, message) = match parsed {
        Some(b) => (b.code, b.message.unwrap_or_default()),
        None => (
            None,
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        ),
    };
    ApiError {
        method: method.to_string(),
        path: path.to_string(),
        status: status.as_u16(),
        code,
        message,
        correlation_id: headers
            .get("ININ-Correlation-Id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(api: Option<&str>, region: Option<&str>, login: Option<&str>) -> ClientConfig {
        let mut c = ClientConfig::new("eu_west_1", "id", "secret");
        c.region = region.map(str::to_string);
        c.api_base_url = api.map(str::to_string);
        c.login_base_url = login.map(str::to_string);
        c
    }

    #[test]
    fn base_urls() {
        let check = |c: ClientConfig, api: &str, login: &str| {
            let client = Client::new(c).unwrap();
            assert_eq!(
                (client.api_base_url(), client.login_base_url()),
                (api, login)
            );
        };
        check(
            cfg(None, Some("eu_west_1"), None),
            "https://api.mypurecloud.ie",
            "https://login.mypurecloud.ie",
        );
        check(
            cfg(
                Some("http://127.0.0.1:9/"),
                None,
                Some("http://127.0.0.1:10"),
            ),
            "http://127.0.0.1:9",
            "http://127.0.0.1:10",
        );
        let by_url = Client::new(cfg(Some("https://api.mypurecloud.de"), None, None)).unwrap();
        assert_eq!(by_url.region().map(|r| r.name()), Some("eu_central_1"));
        assert_eq!(by_url.login_base_url(), "https://login.mypurecloud.de");
        check(
            cfg(Some("https://api.example.test"), None, None),
            "https://api.example.test",
            "https://login.example.test",
        );
        assert!(Client::new(cfg(None, None, None)).is_err());
        assert!(Client::new(cfg(Some("ftp://x"), None, None)).is_err());
        assert!(Client::new(cfg(None, Some("mars_1"), None)).is_err());
    }

    #[test]
    fn debug_redacts_secret() {
        let c = cfg(None, Some("eu_west_1"), None);
        assert!(!format!("{c:?}").contains("secret\""));
        assert!(format!("{c:?}").contains("<redacted>"));
    }

    #[test]
    fn api_error_fields() {
        let mut h = HeaderMap::new();
        h.insert("ININ-Correlation-Id", "abc".parse().unwrap());
        let e = api_error(
            "GET",
            "/x",
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            br#"{"message":"Rate limit exceeded","code":"too.many.requests.retry.after","status":429}"#,
        );
        assert_eq!(e.code.as_deref(), Some("too.many.requests.retry.after"));
        assert_eq!(e.correlation_id.as_deref(), Some("abc"));
        assert_eq!(e.message, "Rate limit exceeded");
        let e = api_error(
            "GET",
            "/x",
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>",
        );
        assert_eq!((e.code, e.message.as_str()), (None, "<html>"));
    }

    #[test]
    fn config_from_toml_like_json() {
        let c: ClientConfig = serde_json::from_value(serde_json::json!({
            "region": "mypurecloud.de", "client_id": "a", "client_secret": "b",
            "retry_after_cap": "50ms", "rate_limit": 100
        }))
        .unwrap();
        assert_eq!(c.retry_after_cap, Duration::from_millis(50));
        assert_eq!(c.rate_limit, 100);
        assert_eq!(c.max_retries, 5);
        let bad: Result<ClientConfig, _> = serde_json::from_value(
            serde_json::json!({"client_id": "a", "client_secret": "b", "nope": 1}),
        );
        assert!(bad.is_err());
    }
}
