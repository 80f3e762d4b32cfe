//! Error types of the crate.

use std::fmt;

/// Why a pattern was rejected.
///
/// Rendered as `InvalidEventPatternException: <path>: <message>` so the text
/// can be returned to API callers the way EventBridge returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    path: String,
    kind: PatternErrorKind,
    message: String,
}

/// The class of a [`PatternError`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternErrorKind {
    /// The pattern text is longer than the configured size limit.
    TooLarge,
    /// The pattern text is not valid JSON.
    InvalidJson,
    /// The pattern (or a `$or` branch) is not a JSON object.
    NotAnObject,
    /// A field value is neither an array nor an object.
    InvalidValue,
    /// A pattern array is empty.
    EmptyArray,
    /// An object inside a pattern array uses an unknown operator.
    UnknownOperator,
    /// An operator received an argument of the wrong type or shape.
    InvalidOperand,
    /// `$or` expands to more combinations than allowed.
    TooManyCombinations,
    /// Wildcards make the pattern too complex.
    TooComplex,
}

impl PatternError {
    pub(crate) fn new(path: &str, kind: PatternErrorKind, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            kind,
            message: message.into(),
        }
    }

    /// The dotted path of the offending field (empty for whole-pattern errors).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The error class.
    pub fn kind(&self) -> PatternErrorKind {
        self.kind
    }

    /// The message without the exception name and path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InvalidEventPatternException: ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PatternError {}

/// Why an event could not be matched.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The event bytes are not JSON (or not UTF-8 where a value is read).
    #[error("event is not valid JSON at byte {offset}: {reason}")]
    InvalidJson {
        /// Byte offset where the problem was seen.
        offset: usize,
        /// Short description.
        reason: &'static str,
    },
    /// The event is valid JSON but not an object.
    #[error("event must be a JSON object")]
    NotAnObject,
    /// The event nests deeper than the matcher follows.
    #[error("event nests deeper than {0} levels")]
    TooDeep(usize),
}

/// Why an input transformation could not be configured or applied.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// More than one of `Input`, `InputPath` and `InputTransformer` was given.
    #[error(
        "ValidationException: only one of Input, InputPath and InputTransformer may be set on a target"
    )]
    Conflicting,
    /// `Input` is not valid JSON or too long.
    #[error("ValidationException: Input: {0}")]
    InvalidInput(String),
    /// A JSONPath (`InputPath` or an `InputPathsMap` value) is invalid.
    #[error("ValidationException: invalid JSONPath {path:?}: {reason}")]
    InvalidPath {
        /// The offending path text.
        path: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An `InputPathsMap` key is invalid.
    #[error("ValidationException: InputPathsMap key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `InputPathsMap` has more than 100 entries.
    #[error("ValidationException: InputPathsMap has {0} entries, at most 100 are allowed")]
    TooManyPaths(usize),
    /// `InputTemplate` is empty, too long, or uses placeholders incorrectly.
    #[error("ValidationException: InputTemplate: {0}")]
    InvalidTemplate(String),
    /// A transformation produced output that is not valid JSON where JSON was required.
    #[error("transformation produced invalid JSON: {0}")]
    InvalidOutput(String),
}
