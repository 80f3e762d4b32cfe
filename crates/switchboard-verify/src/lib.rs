//! Webhook authentication for Switchboard's HTTP sources: verify incoming requests, sign
//! outgoing test requests.
//!
//! # Brief overview
//! - [`Scheme`] names how a sender authenticates: Genesys Open Messaging's
//!   `X-Hub-Signature-256`, [Standard Webhooks], a configurable HMAC header (the seeds'
//!   `X-Genesys-Webhook-Signature`), an API-key header, HTTP Basic, or nothing.
//! - [`Verifier`] holds one scheme and one or more secrets (several for rotation) and checks a
//!   request's headers and **raw body bytes** with [`Verifier::verify`], before anything parses
//!   the body. Errors are [`VerifyError`]s, all HTTP 401, with a
//!   [`public_reason`](VerifyError::public_reason) safe to send back.
//! - [`sign`] produces the headers a sender would attach (for `switchboard send` and tests);
//!   [`encode_whsec`] formats random bytes as a Standard Webhooks secret.
//! - [`HeaderLookup`] abstracts the request's headers.
//!
//! MACs are decoded from base64/hex and compared at full length in constant time
//! (`Mac::verify_slice`), so a truncated or empty signature never matches; API keys and Basic
//! credentials are compared as SHA-256 digests in constant time, which also hides their length.
//!
//! ```
//! use switchboard_verify::{Scheme, Verifier, encode_whsec, sign};
//!
//! let secret = encode_whsec(&[42u8; 32]);
//! let scheme = Scheme::standard_webhooks();
//! let body = br#"{"eventType":"agentCallConnected"}"#;
//! let headers = sign(&scheme, &secret, body, "msg_1", 1_700_000_000)?;
//! let verifier = Verifier::new(scheme, vec![secret])?;
//! let verified = verifier.verify(&headers, body, 1_700_000_010).expect("valid");
//! assert_eq!(verified.delivery_id.as_deref(), Some("msg_1"));
//! assert!(verifier.verify(&headers, b"tampered", 1_700_000_010).is_err());
//! # Ok::<(), switchboard_verify::ConfigError>(())
//! ```
//!
//! # Architecture invariant
//! No I/O, no clock, no randomness: the caller passes `now_unix` and generates secrets.
//!
//! [Standard Webhooks]: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md

mod error;
mod headers;

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use error::{ConfigError, VerifyError};
pub use headers::HeaderLookup;

type HmacSha256 = Hmac<Sha256>;

/// Header of Genesys Open Messaging outbound webhooks.
pub const HUB_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// Prefix of the `X-Hub-Signature-256` value.
pub const HUB_SIGNATURE_PREFIX: &str = "sha256=";
/// The seeds' (invented, but widely copied) signature header.
pub const DEFAULT_HMAC_HEADER: &str = "X-Genesys-Webhook-Signature";
/// Standard Webhooks' reference libraries allow ±5 minutes.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// At most this many entries of `webhook-signature` are considered; more is refused as
/// malformed, so a request cannot buy unbounded MAC comparisons.
pub const MAX_SIGNATURES: usize = 16;

const WEBHOOK_ID: &str = "webhook-id";
const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
const WEBHOOK_SIGNATURE: &str = "webhook-signature";
const AUTHORIZATION: &str = "Authorization";
const WHSEC_PREFIX: &str = "whsec_";

/// How a MAC is written in a header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Standard base64 (padding optional on input, written on output).
    #[default]
    Base64,
    /// Hexadecimal (either case on input, lower case on output).
    Hex,
}

/// How a source authenticates its requests.
///
/// Deserializes from config as an internally tagged table, e.g.
/// `{ type = "standard-webhooks", tolerance_secs = 300 }`, `{ type = "hub-signature256" }`,
/// `{ type = "hmac-header", header = "X-Sig", prefix = "sha256=", encoding = "hex" }`,
/// `{ type = "api-key", header = "X-Api-Key" }`, `{ type = "basic" }`, `{ type = "none" }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Scheme {
    /// Genesys Open Messaging: `X-Hub-Signature-256: sha256=<base64 HMAC-SHA256(secret, body)>`.
    /// Base64 only, as Genesys documents it; a GitHub-style hex sender is an
    /// [`HmacHeader`](Scheme::HmacHeader) with `encoding = "hex"`.
    HubSignature256,
    /// Standard Webhooks v1: `webhook-id`, `webhook-timestamp`, `webhook-signature`
    /// (`v1,<base64>` entries, space-separated), HMAC-SHA256 over `{id}.{timestamp}.{body}` with
    /// a `whsec_` secret; the timestamp must be within ±`tolerance_secs` of now.
    StandardWebhooks {
        /// Allowed clock difference in either direction, seconds.
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// HMAC-SHA256 of the body in one header: `<prefix><encoded MAC>`. No replay protection.
    HmacHeader {
        /// Header name.
        #[serde(default = "default_hmac_header")]
        header: String,
        /// Literal text before the MAC, e.g. `sha256=`.
        #[serde(default)]
        prefix: String,
        /// MAC encoding.
        #[serde(default)]
        encoding: Encoding,
    },
    /// A static key in a header, compared in constant time. No body integrity.
    ApiKey {
        /// Header name.
        header: String,
    },
    /// `Authorization: Basic base64(user:password)`; secrets are `user:password`.
    Basic,
    /// No authentication.
    None,
}

fn default_tolerance() -> u64 {
    DEFAULT_TOLERANCE_SECS
}

fn default_hmac_header() -> String {
    DEFAULT_HMAC_HEADER.to_owned()
}

impl Scheme {
    /// Standard Webhooks with the default ±300 s tolerance.
    pub fn standard_webhooks() -> Self {
        Self::StandardWebhooks {
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
        }
    }

    /// The seeds' convention: `X-Genesys-Webhook-Signature: <base64 HMAC-SHA256>`.
    pub fn hmac_header_default() -> Self {
        Self::HmacHeader {
            header: DEFAULT_HMAC_HEADER.to_owned(),
            prefix: String::new(),
            encoding: Encoding::Base64,
        }
    }

    /// Stable name for logs and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::HubSignature256 => "hub-signature256",
            Self::StandardWebhooks { .. } => "standard-webhooks",
            Self::HmacHeader { .. } => "hmac-header",
            Self::ApiKey { .. } => "api-key",
            Self::Basic => "basic",
            Self::None => "none",
        }
    }
}

/// Key material for one configured secret: the HMAC key, or for `api-key`/`basic` the
/// SHA-256 of the expected value. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a successful verification vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// The signed `webhook-id` (Standard Webhooks only): a delivery id stable across retries,
    /// the preferred dedup key. Other schemes do not sign any id, so this is `None`.
    pub delivery_id: Option<String>,
}

/// One source's scheme and secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    scheme: Scheme,
    secrets: Vec<Secret>,
}

impl Verifier {
    /// Validates the scheme and secrets: at least one non-empty secret unless the scheme is
    /// `None` (which takes none); `whsec_` secrets decode to 24–64 bytes; `basic` secrets
    /// contain `:`; `api-key` secrets are valid header values; header names are HTTP tokens.
    ///
    /// Genesys itself refuses Open Messaging secrets of 15 characters or fewer; that is not
    /// re-checked here, so short secrets remain usable for local tests.
    pub fn new(scheme: Scheme, secrets: Vec<String>) -> Result<Self, ConfigError> {
        check_scheme(&scheme)?;
        if matches!(scheme, Scheme::None) {
            if !secrets.is_empty() {
                return Err(ConfigError::SecretsNotAllowed);
            }
            return Ok(Self {
                scheme,
                secrets: Vec::new(),
            });
        }
        if secrets.is_empty() {
            return Err(ConfigError::NoSecrets {
                scheme: scheme.name(),
            });
        }
        let secrets = secrets
            .iter()
            .enumerate()
            .map(|(index, s)| key_material(&scheme, index, s))
            .collect::<Result<_, _>>()?;
        Ok(Self { scheme, secrets })
    }

    /// The configured scheme.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Checks one request. `body` must be the exact bytes received; `now_unix` is the current
    /// Unix time in seconds (used by Standard Webhooks only).
    pub fn verify(
        &self,
        headers: &dyn HeaderLookup,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verified, VerifyError> {
        match &self.scheme {
            Scheme::None => Ok(Verified::default()),
            Scheme::HubSignature256 => self.verify_header_mac(
                headers,
                body,
                HUB_SIGNATURE_HEADER,
                HUB_SIGNATURE_PREFIX,
                Encoding::Base64,
            ),
            Scheme::HmacHeader {
                header,
                prefix,
                encoding,
            } => self.verify_header_mac(headers, body, header, prefix, *encoding),
            Scheme::StandardWebhooks { tolerance_secs } => {
                self.verify_standard(headers, body, now_unix, *tolerance_secs)
            }
            Scheme::ApiKey { header } => {
                let presented =
                    headers
                        .get(header)
                        .ok_or_else(|| VerifyError::MissingCredentials {
                            header: header.clone(),
                        })?;
                self.match_digest(presented)
            }
            Scheme::Basic => {
                let value =
                    headers
                        .get(AUTHORIZATION)
                        .ok_or_else(|| VerifyError::MissingCredentials {
                            header: AUTHORIZATION.to_owned(),
                        })?;
                let credentials = parse_basic(value)?;
                self.match_digest(&credentials)
            }
        }
    }

    fn verify_header_mac(
        &self,
        headers: &dyn HeaderLookup,
        body: &[u8],
        header: &str,
        prefix: &str,
        encoding: Encoding,
    ) -> Result<Verified, VerifyError> {
        let value = headers
            .get(header)
            .ok_or_else(|| VerifyError::MissingHeader {
                header: header.to_owned(),
            })?;
        let malformed = |reason| VerifyError::MalformedHeader {
            header: header.to_owned(),
            reason,
        };
        let encoded = value
            .trim_ascii()
            .strip_prefix(prefix.as_bytes())
            .ok_or_else(|| malformed("missing the expected prefix"))?;
        let presented = decode(encoded, encoding).ok_or_else(|| match encoding {
            Encoding::Base64 => malformed("signature is not base64"),
            Encoding::Hex => malformed("signature is not hex"),
        })?;
        for secret in &self.secrets {
            if mac(&secret.0)
                .chain_update(body)
                .verify_slice(&presented)
                .is_ok()
            {
                return Ok(Verified::default());
            }
        }
        Err(VerifyError::SignatureMismatch)
    }

    fn verify_standard(
        &self,
        headers: &dyn HeaderLookup,
        body: &[u8],
        now_unix: i64,
        tolerance_secs: u64,
    ) -> Result<Verified, VerifyError> {
        let get = |name: &str| {
            headers.get(name).ok_or_else(|| VerifyError::MissingHeader {
                header: name.to_owned(),
            })
        };
        let (id, ts, sigs) = (
            get(WEBHOOK_ID)?,
            get(WEBHOOK_TIMESTAMP)?,
            get(WEBHOOK_SIGNATURE)?,
        );
        let malformed = |header: &str, reason| VerifyError::MalformedHeader {
            header: header.to_owned(),
            reason,
        };
        let id =
            std::str::from_utf8(id.trim_ascii()).map_err(|_| malformed(WEBHOOK_ID, "not UTF-8"))?;
        if id.is_empty() || id.contains('.') {
            return Err(malformed(
                WEBHOOK_ID,
                "must be non-empty and contain no `.`",
            ));
        }
        let ts = ts.trim_ascii();
        let timestamp = parse_unix(ts).ok_or(VerifyError::MalformedTimestamp)?;
        if now_unix.abs_diff(timestamp) > tolerance_secs {
            return Err(VerifyError::TimestampOutsideTolerance {
                skew_secs: i128::from(timestamp) - i128::from(now_unix),
                tolerance_secs,
            });
        }

        let mut candidates = Vec::new();
        let mut entries = 0usize;
        for entry in sigs.split(|b| *b == b' ').filter(|e| !e.is_empty()) {
            entries += 1;
            if entries > MAX_SIGNATURES {
                return Err(malformed(WEBHOOK_SIGNATURE, "too many signatures"));
            }
            // Other versions (`v1a` for ed25519) are skipped; a v1 entry that does not decode can
            // only be a damaged signature and is treated as one that does not match.
            if let Some(encoded) = entry.strip_prefix(b"v1,") {
                candidates.push(decode(encoded, Encoding::Base64).unwrap_or_default());
            }
        }
        if entries == 0 {
            return Err(malformed(WEBHOOK_SIGNATURE, "no signatures"));
        }
        if candidates.is_empty() {
            return Err(VerifyError::NoSupportedSignature);
        }
        for secret in &self.secrets {
            let signed = mac(&secret.0)
                .chain_update(id.as_bytes())
                .chain_update(b".")
                .chain_update(ts)
                .chain_update(b".")
                .chain_update(body);
            for candidate in &candidates {
                if signed.clone().verify_slice(candidate).is_ok() {
                    return Ok(Verified {
                        delivery_id: Some(id.to_owned()),
                    });
                }
            }
        }
        Err(VerifyError::SignatureMismatch)
    }

    fn match_digest(&self, presented: &[u8]) -> Result<Verified, VerifyError> {
        let digest = Sha256::digest(presented);
        // Every secret is compared, so timing does not tell which one (or whether any) matched.
        let mut matched = subtle::Choice::from(0);
        for secret in &self.secrets {
            matched |= digest.as_slice().ct_eq(&secret.0);
        }
        if bool::from(matched) {
            Ok(Verified::default())
        } else {
            Err(VerifyError::InvalidCredentials)
        }
    }
}

/// Headers a sender using `scheme` attaches to `body`. `msg_id` and `now_unix` are used by
/// Standard Webhooks only (`webhook-id`, `webhook-timestamp`); an id that `verify` would not read
/// back unchanged (see [`ConfigError::InvalidMessageId`]) is refused. The secret is validated as
/// [`Verifier::new`] would.
pub fn sign(
    scheme: &Scheme,
    secret: &str,
    body: &[u8],
    msg_id: &str,
    now_unix: i64,
) -> Result<Vec<(String, String)>, ConfigError> {
    check_scheme(scheme)?;
    let key = match scheme {
        Scheme::None => return Ok(Vec::new()),
        _ => key_material(scheme, 0, secret)?,
    };
    let body_mac = || mac(&key.0).chain_update(body).finalize().into_bytes();
    Ok(match scheme {
        Scheme::None => Vec::new(),
        Scheme::HubSignature256 => vec![(
            HUB_SIGNATURE_HEADER.to_owned(),
            format!("{HUB_SIGNATURE_PREFIX}{}", STANDARD.encode(body_mac())),
        )],
        Scheme::HmacHeader {
            header,
            prefix,
            encoding,
        } => {
            let tag = body_mac();
            let encoded = match encoding {
                Encoding::Base64 => STANDARD.encode(tag),
                Encoding::Hex => hex::encode(tag),
            };
            vec![(header.clone(), format!("{prefix}{encoded}"))]
        }
        Scheme::StandardWebhooks { .. } => {
            if !is_sendable_message_id(msg_id) {
                return Err(ConfigError::InvalidMessageId);
            }
            if now_unix < 0 {
                return Err(ConfigError::NegativeTimestamp(now_unix));
            }
            let ts = now_unix.to_string();
            let tag = mac(&key.0)
                .chain_update(msg_id.as_bytes())
                .chain_update(b".")
                .chain_update(ts.as_bytes())
                .chain_update(b".")
                .chain_update(body)
                .finalize()
                .into_bytes();
            vec![
                (WEBHOOK_ID.to_owned(), msg_id.to_owned()),
                (WEBHOOK_TIMESTAMP.to_owned(), ts),
                (
                    WEBHOOK_SIGNATURE.to_owned(),
                    format!("v1,{}", STANDARD.encode(tag)),
                ),
            ]
        }
        Scheme::ApiKey { header } => vec![(header.clone(), secret.to_owned())],
        Scheme::Basic => vec![(
            AUTHORIZATION.to_owned(),
            format!("Basic {}", STANDARD.encode(secret.as_bytes())),
        )],
    })
}

/// Formats key bytes as a Standard Webhooks secret, `whsec_<base64>`. The gateway draws the
/// bytes (24 to 64, e.g. 32) from its random source; this crate has none.
pub fn encode_whsec(bytes: &[u8]) -> String {
    format!("{WHSEC_PREFIX}{}", STANDARD.encode(bytes))
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long keys are hashed), so this cannot fail; the fallback
    // exists only to avoid an `expect` and is unreachable.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| HmacSha256::new(&Default::default()))
}

fn check_scheme(scheme: &Scheme) -> Result<(), ConfigError> {
    match scheme {
        Scheme::HmacHeader { header, .. } | Scheme::ApiKey { header }
            if !headers::is_token(header) =>
        {
            Err(ConfigError::InvalidHeaderName {
                header: header.clone(),
            })
        }
        _ => Ok(()),
    }
}

fn key_material(scheme: &Scheme, index: usize, secret: &str) -> Result<Secret, ConfigError> {
    if secret.is_empty() {
        return Err(ConfigError::EmptySecret { index });
    }
    match scheme {
        Scheme::StandardWebhooks { .. } => {
            // The reference libraries accept the bare base64 too.
            let encoded = secret.strip_prefix(WHSEC_PREFIX).unwrap_or(secret);
            let key =
                decode(encoded.as_bytes(), Encoding::Base64).ok_or(ConfigError::InvalidWhsec {
                    index,
                    reason: "not base64",
                })?;
            if !(24..=64).contains(&key.len()) {
                return Err(ConfigError::WhsecLength {
                    index,
                    len: key.len(),
                });
            }
            Ok(Secret(key))
        }
        Scheme::HubSignature256 | Scheme::HmacHeader { .. } => {
            Ok(Secret(secret.as_bytes().to_vec()))
        }
        Scheme::ApiKey { .. } => {
            let printable = secret
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
            if !printable || secret.trim() != secret {
                return Err(ConfigError::NotAHeaderValue { index });
            }
            Ok(Secret(Sha256::digest(secret.as_bytes()).to_vec()))
        }
        Scheme::Basic => {
            if !secret.contains(':') {
                return Err(ConfigError::BasicWithoutColon { index });
            }
            Ok(Secret(Sha256::digest(secret.as_bytes()).to_vec()))
        }
        Scheme::None => Err(ConfigError::SecretsNotAllowed),
    }
}

fn decode(encoded: &[u8], encoding: Encoding) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Base64 => STANDARD
            .decode(encoded)
            .or_else(|_| STANDARD_NO_PAD.decode(encoded))
            .ok(),
        Encoding::Hex => hex::decode(encoded).ok(),
    }
}

/// A non-negative decimal integer of at most 19 digits (no sign, no spaces).
/// True for a Standard Webhooks id that [`Verifier::verify`] reads back exactly as signed:
/// non-empty, without `.`, without control characters (no header value carries them) and
/// without surrounding whitespace (HTTP strips it, and so does `verify`, so a MAC over a padded
/// id could never match; found by the `verify_normalize` fuzz target).
fn is_sendable_message_id(id: &str) -> bool {
    !id.is_empty()
        && !id.contains('.')
        && id.trim_ascii() == id
        && !id.bytes().any(|b| b.is_ascii_control() && b != b'\t')
}

fn parse_unix(ts: &[u8]) -> Option<i64> {
    if ts.is_empty() || ts.len() > 19 || !ts.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(ts).ok()?.parse().ok()
}

fn parse_basic(value: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let value = value.trim_ascii();
    let malformed = |reason| VerifyError::MalformedCredentials { reason };
    let space = value
        .iter()
        .position(|b| *b == b' ')
        .ok_or_else(|| malformed("expected `Basic <base64>`"))?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err(malformed("not the Basic scheme"));
    }
    decode(rest.trim_ascii(), Encoding::Base64)
        .ok_or_else(|| malformed("credentials are not base64"))
}
