//! Errors: configuration mistakes (startup) and rejected requests (HTTP 401).

/// A scheme/secret combination that cannot work. Messages name the secret by position, never
/// by value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A scheme other than `none` was given no secret.
    #[error("scheme `{scheme}` needs at least one secret")]
    NoSecrets {
        /// Scheme name.
        scheme: &'static str,
    },
    /// Scheme `none` was given secrets: probably a config mistake that would silently disable auth.
    #[error("scheme `none` takes no secrets; remove them or choose a scheme")]
    SecretsNotAllowed,
    /// A secret is the empty string.
    #[error("secret #{index} is empty")]
    EmptySecret {
        /// Position in the secret list (0-based).
        index: usize,
    },
    /// A Standard Webhooks secret is not `whsec_` + base64.
    #[error("secret #{index} is not a Standard Webhooks secret (`whsec_` + base64): {reason}")]
    InvalidWhsec {
        /// Position in the secret list (0-based).
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A Standard Webhooks secret decodes to a key outside the spec's 24 to 64 bytes.
    #[error("secret #{index} decodes to {len} bytes; Standard Webhooks keys are 24 to 64 bytes")]
    WhsecLength {
        /// Position in the secret list (0-based).
        index: usize,
        /// Decoded length.
        len: usize,
    },
    /// A `basic` secret is not `user:password`.
    #[error("secret #{index} must be `user:password` for scheme `basic`")]
    BasicWithoutColon {
        /// Position in the secret list (0-based).
        index: usize,
    },
    /// An `api-key` secret contains bytes no HTTP header value can carry, so it could never match.
    #[error("secret #{index} contains characters that cannot appear in an HTTP header value")]
    NotAHeaderValue {
        /// Position in the secret list (0-based).
        index: usize,
    },
    /// A configured header name is empty or not an HTTP token.
    #[error("header name {header:?} is not a valid HTTP header name")]
    InvalidHeaderName {
        /// The configured name.
        header: String,
    },
    /// `sign` was given a Standard Webhooks message id that is empty, contains `.` or a control
    /// character, or starts or ends with whitespace (which `verify` would strip).
    #[error(
        "message id must be non-empty, without `.`, control characters or surrounding whitespace \
         (Standard Webhooks)"
    )]
    InvalidMessageId,
    /// `sign` was given a negative Unix time.
    #[error("timestamp {0} is negative")]
    NegativeTimestamp(i64),
}

/// Why a request was refused. Every variant maps to HTTP 401; [`public_reason`] is the short
/// text safe to return to the sender. Neither it nor `Display` ever contains an expected MAC or
/// a secret.
///
/// [`public_reason`]: VerifyError::public_reason
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header the scheme requires is absent.
    #[error("missing header `{header}`")]
    MissingHeader {
        /// Header name.
        header: String,
    },
    /// A signature or id header does not have the scheme's syntax (wrong prefix, bad encoding,
    /// non-UTF-8, ...).
    #[error("malformed header `{header}`: {reason}")]
    MalformedHeader {
        /// Header name.
        header: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `webhook-timestamp` is not a non-negative integer number of seconds.
    #[error("malformed header `webhook-timestamp`: not an integer Unix time")]
    MalformedTimestamp,
    /// `webhook-timestamp` is too old or too far in the future.
    #[error("webhook-timestamp is {skew_secs} s from now; tolerance is ±{tolerance_secs} s")]
    TimestampOutsideTolerance {
        /// Timestamp minus now (negative: in the past).
        skew_secs: i128,
        /// Configured tolerance.
        tolerance_secs: u64,
    },
    /// `webhook-signature` lists no `v1,` signature (only other versions).
    #[error("webhook-signature has no `v1` signature")]
    NoSupportedSignature,
    /// No presented signature matches any configured secret.
    #[error("signature mismatch")]
    SignatureMismatch,
    /// An `api-key`/`basic` credential header is absent.
    #[error("missing credentials header `{header}`")]
    MissingCredentials {
        /// Header name.
        header: String,
    },
    /// The `Authorization` header is not `Basic <base64>`.
    #[error("malformed `Authorization` header: {reason}")]
    MalformedCredentials {
        /// What is wrong.
        reason: &'static str,
    },
    /// The API key or user:password matches no configured secret.
    #[error("invalid credentials")]
    InvalidCredentials,
}

impl VerifyError {
    /// A short reason for the 401 body: fixed strings, nothing from the request or the config.
    pub fn public_reason(&self) -> &'static str {
        match self {
            Self::MissingHeader { .. } => "missing signature header",
            Self::MalformedHeader { .. } => "malformed signature header",
            Self::MalformedTimestamp => "malformed timestamp header",
            Self::TimestampOutsideTolerance { .. } => "timestamp outside tolerance",
            Self::NoSupportedSignature => "no supported signature version",
            Self::SignatureMismatch => "signature mismatch",
            Self::MissingCredentials { .. } => "missing credentials",
            Self::MalformedCredentials { .. } => "malformed credentials",
            Self::InvalidCredentials => "invalid credentials",
        }
    }
}
