//! Claim-checks: an event larger than its target takes is stored in a blob store and replaced by
//! a small event that keeps the envelope, a few summary fields and where the whole event is.
//!
//! The blob is content-addressed (`<sha256>.json`), so a retried delivery stores the same object
//! again instead of a second one, and the consumer can verify what it fetched.

use std::path::{Path, PathBuf};

use serde_json::Value;
pub use switchboard_event::{ClaimCheck, claim_check_stub, sha256_hex};

/// Where claim-checked events go.
#[derive(Debug, Clone)]
pub enum BlobStore {
    /// A local directory (the embedded default).
    Dir(PathBuf),
    /// An S3 bucket and key prefix.
    #[cfg(feature = "aws")]
    S3 {
        /// Client.
        client: switchboard_aws::aws_sdk_s3::Client,
        /// Bucket.
        bucket: String,
        /// Key prefix (may be empty; ends in `/` when not).
        prefix: String,
    },
}

/// A target's claim-check settings, resolved.
#[derive(Debug, Clone)]
pub struct ClaimChecker {
    /// Events whose measured size exceeds this are claim-checked.
    pub max_bytes: usize,
    /// Where.
    pub store: BlobStore,
    /// Dotted paths inside `detail` to keep.
    pub summary_fields: Vec<String>,
}

impl BlobStore {
    /// Stores the bytes durably and returns the pointer.
    pub async fn put(&self, bytes: &[u8]) -> Result<ClaimCheck, String> {
        match self {
            BlobStore::Dir(dir) => {
                let sha = sha256_hex(bytes);
                let path = dir.join(format!("{sha}.json"));
                let tmp = dir.join(format!(".{sha}.{}.tmp", uuid::Uuid::new_v4()));
                let bytes_owned = bytes.to_vec();
                let (path2, dir2) = (path.clone(), dir.clone());
                // Written to a temporary name, fsync'd and renamed, then the directory fsync'd:
                // a pointer is only ever sent for a blob that survives a crash.
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    use std::io::Write;
                    std::fs::create_dir_all(&dir2)?;
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(&bytes_owned)?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, &path2)?;
                    std::fs::File::open(&dir2)?.sync_all()
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{}: {e}", path.display()))?;
                let abs = std::path::absolute(&path).unwrap_or(path);
                Ok(ClaimCheck {
                    uri: format!("file://{}", abs.display()),
                    sha256: sha,
                    size: bytes.len() as u64,
                })
            }
            #[cfg(feature = "aws")]
            BlobStore::S3 {
                client,
                bucket,
                prefix,
            } => switchboard_aws::s3::put_blob(client, bucket, prefix, bytes)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Parses a `[[targets]].claim_check.store` value: `s3://bucket/prefix` or a directory
    /// (relative to the data dir).
    pub fn from_setting(
        store: &str,
        data_dir: &Path,
        #[cfg(feature = "aws")] aws: Option<&switchboard_aws::AwsClients>,
    ) -> Result<Self, String> {
        if let Some(rest) = store.strip_prefix("s3://") {
            #[cfg(feature = "aws")]
            {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("{store:?}: no bucket"));
                }
                let Some(aws) = aws else {
                    return Err("an s3:// claim-check store needs AWS clients".into());
                };
                let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                    prefix.to_owned()
                } else {
                    format!("{prefix}/")
                };
                return Ok(BlobStore::S3 {
                    client: aws.s3.clone(),
                    bucket: bucket.to_owned(),
                    prefix,
                });
            }
            #[cfg(not(feature = "aws"))]
            {
                let _ = rest;
                return Err("s3:// claim-check stores need the aws feature".into());
            }
        }
        let dir = store.strip_prefix("file://").unwrap_or(store);
        Ok(BlobStore::Dir(data_dir.join(dir)))
    }
}

impl ClaimChecker {
    /// Stores `payload` and returns the small event, when `size` is over the limit.
    pub async fn check(&self, payload: &str, size: usize) -> Result<Option<String>, String> {
        if size <= self.max_bytes {
            return Ok(None);
        }
        let original: Value =
            serde_json::from_str(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
        let check = self.store.put(payload.as_bytes()).await?;
        Ok(Some(
            claim_check_stub(&original, &self.summary_fields, &check).to_string(),
        ))
    }
}

/// Fetches a claim-checked event (`file://` here; `s3://` through the AWS clients) and verifies
/// its digest when one is given.
pub async fn fetch(
    uri: &str,
    expected_sha256: Option<&str>,
    #[cfg(feature = "aws")] aws: Option<&switchboard_aws::AwsClients>,
) -> Result<Vec<u8>, String> {
    let bytes = if let Some(path) = uri.strip_prefix("file://") {
        tokio::fs::read(path)
            .await
            .map_err(|e| format!("{path}: {e}"))?
    } else if uri.starts_with("s3://") {
        #[cfg(feature = "aws")]
        {
            let Some(aws) = aws else {
                return Err("s3:// needs AWS settings".into());
            };
            switchboard_aws::s3::get_blob(&aws.s3, uri)
                .await
                .map_err(|e| e.to_string())?
        }
        #[cfg(not(feature = "aws"))]
        return Err("s3:// needs the aws feature".into());
    } else {
        return Err(format!("{uri:?}: expected an s3:// or file:// URI"));
    };
    if let Some(want) = expected_sha256 {
        let got = sha256_hex(&bytes);
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!(
                "{uri}: sha256 mismatch (expected {want}, got {got})"
            ));
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn directory_store_round_trips_and_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::Dir(dir.path().join("cc"));
        let c = store.put(b"{\"a\":1}").await.unwrap();
        assert!(c.uri.starts_with("file://"));
        #[cfg(feature = "aws")]
        let got = fetch(&c.uri, Some(&c.sha256), None).await.unwrap();
        #[cfg(not(feature = "aws"))]
        let got = fetch(&c.uri, Some(&c.sha256)).await.unwrap();
        assert_eq!(got, b"{\"a\":1}");
        std::fs::write(c.uri.trim_start_matches("file://"), b"{}").unwrap();
        #[cfg(feature = "aws")]
        let err = fetch(&c.uri, Some(&c.sha256), None).await.unwrap_err();
        #[cfg(not(feature = "aws"))]
        let err = fetch(&c.uri, Some(&c.sha256)).await.unwrap_err();
        assert!(err.contains("sha256 mismatch"), "{err}");
    }
}
