//! The result of sending one item, and how SDK errors map onto it.

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

/// What happened to one item of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// AWS took it.
    Delivered,
    /// Worth retrying later (throttling, internal errors, timeouts, connection errors).
    Retryable {
        /// The AWS error code or transport error kind.
        code: String,
        /// Detail.
        message: String,
    },
    /// Will not succeed as is (malformed, too large, access denied…): straight to the DLQ.
    Fatal {
        /// The AWS error code.
        code: String,
        /// Detail.
        message: String,
    },
}

impl Outcome {
    pub(crate) fn code_message(self) -> (String, String) {
        match self {
            Outcome::Delivered => (String::new(), String::new()),
            Outcome::Retryable { code, message } | Outcome::Fatal { code, message } => {
                (code, message)
            }
        }
    }

    pub(crate) fn retryable(code: &str, message: impl Into<String>) -> Self {
        Outcome::Retryable {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn fatal(code: &str, message: impl Into<String>) -> Self {
        Outcome::Fatal {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// Error codes AWS documents as transient across the services we call. Anything else with a
/// 4xx status is the caller's fault and is not retried.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "SlowDown",
    "InternalFailure",
    "InternalException",
    "InternalError",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "TransactionInProgressException",
];

/// Whether an AWS error code names a transient condition.
pub fn is_retryable_code(code: &str) -> bool {
    RETRYABLE_CODES.contains(&code)
}

/// Classifies a failed call: transport failures and throttling/5xx are retryable, other service
/// errors are not.
pub fn classify_sdk_error<E>(e: &SdkError<E>) -> Outcome
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::TimeoutError(_) => Outcome::retryable("TIMEOUT", "the AWS call timed out"),
        SdkError::DispatchFailure(d) => Outcome::retryable(
            "CONNECTION_ERROR",
            format!("could not reach AWS: {:?}", d.as_connector_error()),
        ),
        SdkError::ResponseError(_) => {
            Outcome::retryable("RESPONSE_ERROR", "unreadable response from AWS")
        }
        SdkError::ConstructionFailure(_) => {
            Outcome::fatal("REQUEST_INVALID", format!("request not built: {e}"))
        }
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = e.code().unwrap_or("").to_owned();
            let message = e.message().unwrap_or("").to_owned();
            let code = if code.is_empty() {
                format!("HTTP_{status}")
            } else {
                code
            };
            if is_retryable_code(&code) || status >= 500 || status == 429 {
                Outcome::Retryable { code, message }
            } else {
                Outcome::Fatal { code, message }
            }
        }
        // `SdkError` is non-exhaustive; an unknown kind is assumed transient so nothing is lost.
        _ => Outcome::retryable("UNKNOWN", e.to_string()),
    }
}
