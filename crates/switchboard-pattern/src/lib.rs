//! EventBridge-compatible event patterns, a many-rule matcher and target
//! input transformation. The crate is pure: no I/O, no async, no threads.
//!
//! # Brief overview
//!
//! * [`Pattern`] — a validated event pattern ([`Pattern::parse`] with
//!   [`Limits`]); errors are [`PatternError`]s rendered like EventBridge's
//!   `InvalidEventPatternException`.
//! * [`Matcher`] — many named rules compiled into per-field indexes;
//!   [`Matcher::matches_json`] and [`Matcher::matches_value`] return the
//!   names of matching rules, in the order the rules were added.
//! * [`TargetInput`] — what a target receives: the matched event, a constant
//!   (`Input`), a part of the event (`InputPath`) or an `InputTransformer`.
//!
//! # Semantics
//!
//! The reference is the AWS EventBridge user guide; where it is silent the
//! crate follows aws/event-ruler, the library EventBridge runs:
//!
//! * **Arrays**: a pattern array is an OR; an event array matches when any
//!   element matches, for operators too (`anything-but ["a"]` matches
//!   `["a","b"]`). An empty event array has no values. Matches never combine
//!   fields taken from different elements of one event array (event-ruler's
//!   `rulesForJSONEvent` array consistency).
//! * **Leaves**: operators apply to leaf values (strings, numbers, booleans,
//!   null). `null` exists; an object-valued field is not an existing leaf, so
//!   `exists: true` fails and `exists: false` succeeds on it. `exists: false`
//!   means "no leaf at this path anywhere in the event" (it is not evaluated
//!   per array element).
//! * **Exact numbers** use event-ruler's numeric equality by default: `300`
//!   matches `300.0` and `3.0e2`, `-0` matches `0`. Integers with more than 15
//!   digits that fit in 64 bits compare digit by digit, so
//!   `12345678901234567890` does not match `12345678901234567891`. (The
//!   EventBridge docs describe a string-representation comparison; it is not
//!   offered.) Numbers never match strings.
//! * **`numeric`** compares float64 values over the whole double range; only
//!   JSON numbers qualify.
//! * **`anything-but X`** matches every leaf value that `X` does not match,
//!   whatever its type: `anything-but ["a"]` matches `5`, `null` and `"b"`;
//!   `anything-but {"prefix": "x"}` matches the number `1`. It never matches
//!   a missing field.
//! * **`equals-ignore-case`** and the ignore-case `prefix`/`suffix` compare
//!   text after upper-casing then lower-casing every character, so `ß` matches
//!   `SS` as in event-ruler.
//! * **`wildcard`**: `*` matches any run of characters (including none);
//!   `\*` and `\\` are the only escapes; consecutive `*` are rejected.
//! * **`cidr`** matches IPv4/IPv6 string values by address (so full and
//!   compressed IPv6 spellings both match). `/32` and `/128` are rejected, as
//!   in event-ruler; use an exact string instead.
//! * **`$or`** is the operator only when its value is an array of at least two
//!   objects whose keys are not operator names; otherwise `$or` is an ordinary
//!   field name (event-ruler's backward-compatible reading).
//! * **Keys**: nested and dotted keys name the same path (`{"a":{"b":[1]}}`
//!   equals `{"a.b":[1]}`, and each matches both event shapes); duplicate
//!   pattern keys keep the last value.
//! * **Limits** ([`Limits`]): pattern size (2048 characters, up to 4096),
//!   at most 1000 `$or` combinations, at most 100 wildcard `*` per pattern.
//!
//! # Events
//!
//! [`Matcher::matches_json`] scans the event bytes directly and reads only
//! the paths some rule mentions; other subtrees are skipped by counting
//! brackets (SIMD on x86_64). Where a skipped object or array lies outside
//! any array and no quote from there to the end of the event starts a key
//! segment some rule mentions (GeoJSON coordinates after the last property
//! a rule uses, an envelope's `detail` when rules only look at
//! `detail-type`), the walk ends there instead: nothing after it could
//! reach a rule. Read values are fully checked, skipped ones only
//! structurally (balanced brackets, terminated strings), and what follows
//! such an end not at all, so malformed events may be matched instead of
//! rejected: validate events first where that matters (the gateway does at
//! ingest). Duplicate keys in an event are all seen, the end included (a
//! `serde_json::Value` keeps the last one).
//! [`Matcher::matches_value`] walks an already parsed event.
//!
//! # Input transformation
//!
//! See [`TargetInput`] for the choices made where AWS is silent (missing
//! paths, escaping, `*`) and [`InputTransformer`] for template rendering.
//!
//! # Architecture invariants
//!
//! The crate does no I/O and spawns nothing. Matching cost grows with the
//! event, not with the number of rules, except for per-value operators
//! (`wildcard`, `numeric`, `cidr`, `anything-but`) on one field, which are
//! checked one by one. The only `unsafe` code is the SIMD bracket and quote
//! scanning in the event scanner, each block justified where it stands.

mod error;
mod json;
mod matcher;
mod pattern;
mod transform;
mod value;

pub use error::{EventError, PatternError, PatternErrorKind, TransformError};
pub use matcher::{MAX_EVENT_DEPTH, Matcher, Scratch};
pub use pattern::{Limits, MAX_PATTERN_CHARS_CEILING, Pattern};
pub use transform::{
    InputTransformer, InputTransformerSpec, JsonPath, TargetInput, TransformContext,
};
