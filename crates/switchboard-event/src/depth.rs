//! A nesting-depth check that runs on raw bytes before any JSON parser sees them.

/// The input nests arrays/objects deeper than allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DepthError {
    /// The bracket at byte `offset` opens level `max_depth + 1`.
    #[error("JSON nesting exceeds {max_depth} levels (at byte {offset})")]
    TooDeep {
        /// The configured limit.
        max_depth: usize,
        /// Byte offset of the first `[` or `{` past the limit.
        offset: usize,
    },
}

/// Refuses JSON whose arrays/objects nest deeper than `max_depth` (`{}` is depth 1, a scalar
/// depth 0), in one linear pass with O(1) memory.
///
/// It runs before serde so that a 100,000-deep body costs a byte scan, not a recursive parse.
/// Brackets inside strings are skipped, honouring `\"` and `\\` escapes. The scan does not
/// validate JSON: malformed input that passes is left for the parser to reject (a stray closing
/// bracket never drives the depth below zero, so it cannot hide an opening one).
pub fn check_json_depth(bytes: &[u8], max_depth: usize) -> Result<(), DepthError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(DepthError::TooDeep { max_depth, offset });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
