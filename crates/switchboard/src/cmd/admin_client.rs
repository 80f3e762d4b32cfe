//! A small blocking-free client for the admin API, shared by the `dlq` commands.

use anyhow::{Context as _, bail};

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "SWITCHBOARD_URL")]
    pub url: String,
    /// Admin bearer token.
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl AdminArgs {
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut req = reqwest::Client::new().request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            bail!("{url}: {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{url}: answer is not JSON"))
    }
}
