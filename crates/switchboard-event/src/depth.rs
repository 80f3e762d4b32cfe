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
    let mut i = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // String bodies are most of a Genesys event's bytes: skip them with a vectorized
                // search for the only two bytes that matter inside a string.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                        // Unterminated string: nothing after it can open a level.
                        None => return Ok(()),
                        Some(at) if bytes[i + at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at;
                            break;
                        }
                    }
                    if i >= bytes.len() {
                        return Ok(());
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(DepthError::TooDeep {
                        max_depth,
                        offset: i,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}
