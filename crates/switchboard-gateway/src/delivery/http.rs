//! The `http` target: POST the payload as JSON, with authentication and an idempotency key.
//!
//! Classification (see `policy`): 2xx delivered; 408, 429 and 5xx retryable, honouring
//! `Retry-After`; timeouts and connection errors retryable; any other status fatal. A 401 with
//! OAuth 2 first drops the cached token and tries once more with a fresh one, because the
//! usual cause is a token revoked or expired early on the server side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use switchboard_store::Delivery;
use tokio::sync::Mutex;

use super::policy::Attempt;
use crate::config::{HttpAuth, HttpTargetConfig, secret_value};

/// Refresh a cached token this long before it expires.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// A configured HTTP endpoint.
#[derive(Debug)]
pub struct HttpSender {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    auth: Auth,
}

#[derive(Debug)]
enum Auth {
    None,
    /// A complete `Authorization`-style header (basic, bearer) or an API-key header.
    Static(HeaderName, HeaderValue),
    Oauth2(Arc<TokenSource>),
}

/// OAuth 2 client-credentials tokens, fetched on demand and cached.
#[derive(Debug)]
pub struct TokenSource {
    client: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    /// One refresh at a time: the mutex is held across the token request so concurrent
    /// deliveries that find the token stale wait for one fetch instead of each making their own.
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenSource {
    async fn token(&self) -> Result<String, String> {
        let mut cached = self.cached.lock().await;
        if let Some((tok, exp)) = cached.as_ref()
            && Instant::now() + TOKEN_REFRESH_MARGIN < *exp
        {
            return Ok(tok.clone());
        }
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = &self.scope {
            form.push(("scope", s));
        }
        let resp = self
            .client
            .post(&self.token_url)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("token request failed: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("token endpoint answered {status}"));
        }
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|e| format!("token response is not valid JSON: {e}"))?;
        let ttl = Duration::from_secs(body.expires_in.unwrap_or(3600));
        *cached = Some((body.access_token.clone(), Instant::now() + ttl));
        Ok(body.access_token)
    }

    async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

impl HttpSender {
    /// Builds the client. Secrets are resolved here, once.
    pub fn new(cfg: &HttpTargetConfig) -> Result<Self, String> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("url: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.timeout_secs.min(10)))
            // Redirects could carry credentials to another host; a target must answer directly.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k:?}: {e}"))?;
            let value = HeaderValue::from_str(v).map_err(|e| format!("header {k:?}: {e}"))?;
            headers.insert(name, value);
        }
        let missing = |what: &str| format!("{what} is not set (check the *_env variable)");
        let auth = match &cfg.auth {
            HttpAuth::None => Auth::None,
            HttpAuth::Basic {
                username,
                password,
                password_env,
            } => {
                use base64::Engine as _;
                let pw = secret_value(password, password_env).ok_or_else(|| missing("password"))?;
                let enc =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{pw}"));
                Auth::Static(
                    reqwest::header::AUTHORIZATION,
                    sensitive(&format!("Basic {enc}"))?,
                )
            }
            HttpAuth::ApiKey {
                header,
                value,
                value_env,
            } => {
                let v = secret_value(value, value_env).ok_or_else(|| missing("api key"))?;
                let name = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|e| format!("auth.header: {e}"))?;
                Auth::Static(name, sensitive(&v)?)
            }
            HttpAuth::Bearer { token, token_env } => {
                let t = secret_value(token, token_env).ok_or_else(|| missing("token"))?;
                Auth::Static(
                    reqwest::header::AUTHORIZATION,
                    sensitive(&format!("Bearer {t}"))?,
                )
            }
            HttpAuth::Oauth2 {
                token_url,
                client_id,
                client_secret,
                client_secret_env,
                scope,
            } => Auth::Oauth2(Arc::new(TokenSource {
                client: client.clone(),
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: secret_value(client_secret, client_secret_env)
                    .ok_or_else(|| missing("client_secret"))?,
                scope: scope.clone(),
                cached: Mutex::new(None),
            })),
        };
        Ok(HttpSender {
            client,
            url,
            headers,
            auth,
        })
    }

    /// One attempt at one delivery.
    pub async fn send(&self, d: &Delivery) -> Attempt {
        let first = self.send_once(d).await;
        if let (Auth::Oauth2(ts), Ok(resp)) = (&self.auth, &first)
            && resp.status() == reqwest::StatusCode::UNAUTHORIZED
        {
            ts.invalidate().await;
            return classify(self.send_once(d).await);
        }
        classify(first)
    }

    async fn send_once(&self, d: &Delivery) -> Result<reqwest::Response, SendError> {
        let mut req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", &d.event_id)
            .body(d.payload.clone());
        match &self.auth {
            Auth::None => {}
            Auth::Static(name, value) => req = req.header(name.clone(), value.clone()),
            Auth::Oauth2(ts) => {
                let token = ts.token().await.map_err(SendError::Token)?;
                req = req.bearer_auth(token);
            }
        }
        req.send().await.map_err(SendError::Http)
    }
}

enum SendError {
    Token(String),
    Http(reqwest::Error),
}

fn sensitive(v: &str) -> Result<HeaderValue, String> {
    let mut h = HeaderValue::from_str(v)
        .map_err(|_| "credential contains characters not allowed in a header".to_string())?;
    h.set_sensitive(true);
    Ok(h)
}

fn classify(r: Result<reqwest::Response, SendError>) -> Attempt {
    match r {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                return Attempt::Delivered;
            }
            let code = format!("HTTP_{}", status.as_u16());
            let message = format!("target answered {status}");
            if status.as_u16() == 429 || status.as_u16() == 408 || status.is_server_error() {
                Attempt::Retryable {
                    code,
                    message,
                    retry_after: retry_after(resp.headers()),
                }
            } else {
                Attempt::Fatal { code, message }
            }
        }
        Err(SendError::Token(message)) => Attempt::Retryable {
            code: "TOKEN_ERROR".into(),
            message,
            retry_after: None,
        },
        Err(SendError::Http(e)) => {
            let code = if e.is_timeout() {
                "TIMEOUT"
            } else if e.is_connect() {
                "CONNECTION"
            } else {
                "REQUEST_ERROR"
            };
            Attempt::Retryable {
                code: code.into(),
                message: e.to_string(),
                retry_after: None,
            }
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = at - time::OffsetDateTime::now_utc();
    Some(Duration::from_secs(
        u64::try_from(delta.whole_seconds()).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("soon"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
