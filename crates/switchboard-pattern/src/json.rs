//! A small JSON byte scanner for the matcher's event flattener.
//!
//! It reads values at the paths some rule mentions and skips everything else
//! without materialising it. Skipping is structural: strings are found with
//! `memchr` and containers by counting brackets, so a malformed token inside a
//! skipped subtree (a bad literal, mismatched bracket kinds, invalid UTF-8) is
//! not always reported. Values that are read are checked fully.

use crate::error::EventError;

pub(crate) struct Cursor<'a> {
    pub b: &'a [u8],
    pub i: usize,
}

const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// Reads eight bytes at `j` as a little-endian word (`j + 8 <= b.len()`).
#[inline]
fn word_at(b: &[u8], j: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[j..j + 8]);
    u64::from_le_bytes(word)
}

/// High bit set in exactly the bytes of `x` that are zero (no carries
/// between bytes, so the mask can be counted, not only searched).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    !((((x & LOW7) + LOW7) | x) | LOW7)
}

#[inline]
fn splat(c: u8) -> u64 {
    u64::from(c) * 0x0101_0101_0101_0101
}

/// Bit masks (bit `i` for `chunk[i]`) of quotes, opening brackets and
/// closing brackets in a 16-byte chunk.
#[cfg(target_arch = "x86_64")]
#[inline]
fn chunk_masks(chunk: &[u8]) -> (u32, u32, u32) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    if chunk.len() < 16 {
        return (1, 0, 0);
    }
    // SAFETY: SSE2 is part of the x86_64 baseline, so the intrinsics are
    // always available; `_mm_loadu_si128` reads 16 bytes without alignment
    // requirements and `chunk` holds at least 16 bytes (checked above).
    // Measured necessary: skipping unmentioned subtrees (GeoJSON
    // coordinates) dominated matching time with the 8-byte SWAR loop this
    // replaces (see BENCHMARKS.md ("Pattern engine" section)).
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
        let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
        let quotes = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)));
        let opens = _mm_movemask_epi8(_mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8)));
        let closes = _mm_movemask_epi8(_mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8)));
        (quotes as u32, opens as u32, closes as u32)
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn chunk_masks(chunk: &[u8]) -> (u32, u32, u32) {
    chunk_masks_portable(chunk)
}

/// Portable version of the x86_64 SSE2 `chunk_masks`, one word at a time.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn chunk_masks_portable(chunk: &[u8]) -> (u32, u32, u32) {
    let mut out = (0u32, 0u32, 0u32);
    for (half, at) in [(0u32, 0usize), (8, 8)] {
        let Some(bytes) = chunk.get(at..at + 8) else {
            return (1, 0, 0);
        };
        let w = word_at(bytes, 0);
        let folded = w | splat(0x20);
        // One bit per byte, gathered from each byte's high bit.
        let compress =
            |m: u64| -> u32 { (((m >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56) as u32 };
        out.0 |= compress(zero_bytes(w ^ splat(b'"'))) << half;
        out.1 |= compress(zero_bytes(folded ^ splat(b'{'))) << half;
        out.2 |= compress(zero_bytes(folded ^ splat(b'}'))) << half;
    }
    out
}

/// The [`CHUNK`] bytes at `j`. The last bytes of an event are copied into
/// `padded` (spaces, which no scanner looks for), so the end of every event
/// is not walked byte by byte.
#[inline]
fn chunk_at<'a>(b: &'a [u8], j: usize, padded: &'a mut [u8; CHUNK]) -> &'a [u8; CHUNK] {
    if let Some(chunk) = b.get(j..j + CHUNK).and_then(|c| c.first_chunk::<CHUNK>()) {
        return chunk;
    }
    let tail = b.get(j..).unwrap_or_default();
    padded[..tail.len()].copy_from_slice(tail);
    padded
}

/// Position of the first quote at or after `from` for which `is_key` accepts
/// the position after it, or `b.len()` if there is none. A backslash stops
/// the search early, at the start of its chunk: an escaped string can spell
/// anything. Runs without quotes go to `memchr`'s wider loop, which is what
/// makes this cheaper than walking what it passes over (GeoJSON coordinates).
pub(crate) fn first_quote_where(
    b: &[u8],
    from: usize,
    mut is_key: impl FnMut(usize) -> bool,
) -> usize {
    let mut j = from;
    while j < b.len() {
        let mut padded = [b' '; CHUNK];
        let (mut quotes, slashes) = quote_masks(chunk_at(b, j, &mut padded));
        if slashes != 0 {
            return j;
        }
        if quotes == 0 {
            j = b
                .get(j + CHUNK..)
                .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                .map_or(b.len(), |k| j + CHUNK + k);
            continue;
        }
        while quotes != 0 {
            let q = j + quotes.trailing_zeros() as usize;
            if is_key(q + 1) {
                return q;
            }
            quotes &= quotes - 1;
        }
        j += CHUNK;
    }
    b.len()
}

/// Bit masks (bit `i` for `chunk[i]`) of quotes and backslashes in a
/// 16-byte chunk.
#[cfg(target_arch = "x86_64")]
#[inline]
fn quote_masks(chunk: &[u8; 16]) -> (u32, u32) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline; `chunk` holds 16 bytes
    // and the load is unaligned. Measured necessary: this is the whole cost
    // of `first_quote_where`, whose early end of the matcher's walk beat
    // skipping the rest of the event (BENCHMARKS.md, "Pattern engine").
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
        let quotes = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)));
        let slashes = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)));
        (quotes as u32, slashes as u32)
    }
}

/// Portable version of the x86_64 SSE2 `quote_masks`.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn quote_masks(chunk: &[u8; 16]) -> (u32, u32) {
    let mut out = (0u32, 0u32);
    for (i, &c) in chunk.iter().enumerate() {
        out.0 |= u32::from(c == b'"') << i;
        out.1 |= u32::from(c == b'\\') << i;
    }
    out
}

/// Bytes examined per step when skipping a container.
const CHUNK: usize = 16;

/// Skips, 32 bytes at a time, the part of a container that holds no quote
/// and cannot close it; returns the new position and depth. Stops (possibly
/// at once) where the caller's general loop must look closer.
#[cfg(target_arch = "x86_64")]
#[inline]
fn skip_run(b: &[u8], j: usize, depth: usize) -> (usize, usize) {
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt")
    {
        // SAFETY: the CPU supports AVX2 and POPCNT (checked just above),
        // which is all `skip_run_avx2` requires.
        unsafe { skip_run_avx2(b, j, depth) }
    } else {
        (j, depth)
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn skip_run(_b: &[u8], j: usize, depth: usize) -> (usize, usize) {
    (j, depth)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn skip_run_avx2(b: &[u8], mut j: usize, mut depth: usize) -> (usize, usize) {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };
    let quote = _mm256_set1_epi8(b'"' as i8);
    let case = _mm256_set1_epi8(0x20);
    let open = _mm256_set1_epi8(b'{' as i8);
    let close = _mm256_set1_epi8(b'}' as i8);
    while let Some(chunk) = b.get(j..j + 32) {
        // SAFETY: `chunk` holds exactly 32 bytes and the load is unaligned.
        // Measured necessary: see `chunk_masks`; this doubles its width.
        let v = unsafe { _mm256_loadu_si256(chunk.as_ptr().cast::<__m256i>()) };
        let quotes = _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, quote));
        if quotes != 0 {
            break;
        }
        let folded = _mm256_or_si256(v, case);
        let opens = _mm256_movemask_epi8(_mm256_cmpeq_epi8(folded, open)).count_ones() as usize;
        let closes = _mm256_movemask_epi8(_mm256_cmpeq_epi8(folded, close)).count_ones() as usize;
        if closes >= depth {
            break;
        }
        depth = depth + opens - closes;
        j += 32;
    }
    (j, depth)
}

/// Number of set bits (table based: the baseline x86-64 target has no
/// `popcnt` instruction).
#[inline]
fn pop32(m: u32) -> usize {
    m.to_le_bytes()
        .iter()
        .map(|&x| usize::from(POP8[x as usize]))
        .sum()
}

static POP8: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).count_ones() as u8;
        i += 1;
    }
    t
};

/// Index of the first `"` or `\` at or after `j`, or `b.len()`.
#[inline]
fn find_quote_or_backslash(b: &[u8], mut j: usize) -> usize {
    while j + 8 <= b.len() {
        let w = word_at(b, j);
        let m = zero_bytes(w ^ splat(b'"')) | zero_bytes(w ^ splat(b'\\'));
        if m != 0 {
            return j + (m.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while j < b.len() && b[j] != b'"' && b[j] != b'\\' {
        j += 1;
    }
    j
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b, i: 0 }
    }

    pub(crate) fn err(&self, reason: &'static str) -> EventError {
        EventError::InvalidJson {
            offset: self.i,
            reason,
        }
    }

    #[inline]
    pub(crate) fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// At an opening quote: returns the raw content span and whether it holds
    /// escapes, leaving the cursor after the closing quote.
    #[inline]
    pub(crate) fn string_span(&mut self) -> Result<(usize, usize, bool), EventError> {
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        loop {
            let at = find_quote_or_backslash(self.b, j);
            match self.b.get(at) {
                Some(b'"') => {
                    self.i = at + 1;
                    return Ok((start, at, escaped));
                }
                Some(_) => {
                    escaped = true;
                    j = at + 2;
                    if j > self.b.len() {
                        self.i = self.b.len();
                        return Err(self.err("unterminated string"));
                    }
                }
                None => {
                    self.i = self.b.len();
                    return Err(self.err("unterminated string"));
                }
            }
        }
    }

    /// Scans a number at the cursor (JSON grammar) and returns its text.
    pub(crate) fn number(&mut self) -> Result<&'a str, EventError> {
        let b = self.b;
        let start = self.i;
        let mut j = start;
        if b.get(j) == Some(&b'-') {
            j += 1;
        }
        match b.get(j) {
            Some(b'0') => j += 1,
            Some(b'1'..=b'9') => {
                while matches!(b.get(j), Some(b'0'..=b'9')) {
                    j += 1;
                }
            }
            _ => {
                self.i = j;
                return Err(self.err("invalid number"));
            }
        }
        if b.get(j) == Some(&b'.') {
            j += 1;
            if !matches!(b.get(j), Some(b'0'..=b'9')) {
                self.i = j;
                return Err(self.err("invalid number"));
            }
            while matches!(b.get(j), Some(b'0'..=b'9')) {
                j += 1;
            }
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            j += 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if !matches!(b.get(j), Some(b'0'..=b'9')) {
                self.i = j;
                return Err(self.err("invalid number"));
            }
            while matches!(b.get(j), Some(b'0'..=b'9')) {
                j += 1;
            }
        }
        self.i = j;
        // The grammar above only admits ASCII.
        std::str::from_utf8(&b[start..j]).map_err(|_| self.err("invalid number"))
    }

    /// Consumes `true`, `false` or `null`.
    pub(crate) fn literal(&mut self) -> Result<Literal, EventError> {
        let rest = &self.b[self.i..];
        let (lit, n) = if rest.starts_with(b"true") {
            (Literal::True, 4)
        } else if rest.starts_with(b"false") {
            (Literal::False, 5)
        } else if rest.starts_with(b"null") {
            (Literal::Null, 4)
        } else {
            return Err(self.err("invalid literal"));
        };
        self.i += n;
        Ok(lit)
    }

    /// Skips one value of any kind.
    pub(crate) fn skip_value(&mut self) -> Result<(), EventError> {
        match self.peek() {
            Some(b'"') => self.string_span().map(|_| ()),
            Some(b'{' | b'[') => self.skip_container(),
            Some(b't' | b'f' | b'n') => self.literal().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(_) => Err(self.err("unexpected character")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    /// Skips an object or array by counting brackets, [`CHUNK`] bytes at a
    /// time: brackets before a chunk's first quote are counted from bit
    /// masks unless they could close the container, in which case those bytes
    /// are walked one by one; a quote hands over to [`Cursor::string_span`].
    fn skip_container(&mut self) -> Result<(), EventError> {
        let b = self.b;
        let mut depth = 0usize;
        let mut j = self.i;
        while j < b.len() {
            if depth > 0 {
                (j, depth) = skip_run(b, j, depth);
            }
            let mut padded = [b' '; CHUNK];
            let (quotes, opens, closes) = chunk_masks(chunk_at(b, j, &mut padded));
            // Fast path, free of data-dependent branches: inside a container
            // full of numbers, chunks have no quote and cannot close it.
            if quotes == 0 {
                let c = pop32(closes);
                if c < depth {
                    depth = depth + pop32(opens) - c;
                    j += CHUNK;
                    continue;
                }
            }
            let limit = if quotes == 0 {
                CHUNK
            } else {
                quotes.trailing_zeros() as usize
            };
            let before = if limit == CHUNK {
                u32::MAX
            } else {
                (1u32 << limit) - 1
            };
            let (opens, closes) = (opens & before, closes & before);
            if opens | closes != 0 {
                let c = pop32(closes);
                if c < depth {
                    depth = depth + pop32(opens) - c;
                } else {
                    let end = (j + limit).min(b.len());
                    for (k, &byte) in b.iter().enumerate().take(end).skip(j) {
                        match byte {
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' => {
                                depth = depth.saturating_sub(1);
                                if depth == 0 {
                                    self.i = k + 1;
                                    return Ok(());
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            if limit < CHUNK {
                self.i = j + limit;
                self.string_span()?;
                j = self.i;
            } else {
                j += CHUNK;
            }
        }
        self.i = b.len();
        Err(self.err("unterminated container"))
    }

    /// Expects `c` (after whitespace) and consumes it.
    #[inline]
    pub(crate) fn expect(&mut self, c: u8, reason: &'static str) -> Result<(), EventError> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Literal {
    True,
    False,
    Null,
}

/// Decodes the escapes of a raw JSON string body into `out`.
pub(crate) fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *raw.get(i + 1).ok_or("bad escape")?;
        i += 2;
        let simple = match e {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let hi = hex4(raw.get(i..i + 4))?;
                i += 4;
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    if raw.get(i..i + 2) != Some(b"\\u") {
                        return Err("lone surrogate");
                    }
                    let lo = hex4(raw.get(i + 2..i + 6))?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err("lone surrogate");
                    }
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else if (0xDC00..0xE000).contains(&hi) {
                    return Err("lone surrogate");
                } else {
                    hi
                };
                let ch = char::from_u32(cp).ok_or("bad escape")?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            _ => return Err("bad escape"),
        };
        out.push(simple);
    }
    Ok(())
}

fn hex4(s: Option<&[u8]>) -> Result<u32, &'static str> {
    let s = s.ok_or("bad escape")?;
    let mut v = 0u32;
    for &c in s {
        let d = (c as char).to_digit(16).ok_or("bad escape")?;
        v = v * 16 + d;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_nested_values() {
        let text = br#"{"a":[1,{"b":"]}\"x"},[[]]],"c":true} rest"#;
        let mut c = Cursor::new(text);
        c.skip_value().unwrap();
        assert_eq!(&text[c.i..], b" rest");
        let mut c = Cursor::new(br#"[1,2"#);
        assert!(c.skip_value().is_err());
        for text in [
            r#"[[[-122.51768673450525, 37.71339321429936, 0.0], [-122.44474733253622, 37.75109674142695, 0.0]]]"#,
            r#"{"k":"]]]]]]]]]]]]]]]]\"]]]]]]]]]","l":[[[[[[[[[[[]]]]]]]]]]],"m":{"n":{"o":{}}}}"#,
            r#"[                                         ]"#,
            r#"["\\", "\"", "a\\\"b", {"]": "["}, [["}}}}}}}}}}}}}}}}}}}}"]]]"#,
            r#"{"YyY_yyy_YYYY":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}"#,
        ] {
            let full = format!("{text} rest");
            let mut c = Cursor::new(full.as_bytes());
            c.skip_value().unwrap();
            assert_eq!(&full[c.i..], " rest", "{text}");
            // Truncations never succeed.
            for cut in 1..text.len() {
                let mut c = Cursor::new(&text.as_bytes()[..cut]);
                assert!(c.skip_value().is_err(), "{}", &text[..cut]);
            }
        }
    }

    /// `n` pseudo-random 16-byte chunks over `alphabet` (xorshift, fixed seed).
    fn random_chunks(alphabet: &[u8], n: usize) -> impl Iterator<Item = [u8; 16]> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..n).map(move |_| {
            let mut chunk = [0u8; 16];
            for c in &mut chunk {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *c = alphabet[(state % alphabet.len() as u64) as usize];
            }
            chunk
        })
    }

    #[test]
    fn chunk_masks_agree() {
        for chunk in random_chunks(b"\"[]{}YyZ_ 1,", 5000) {
            let mut want = (0u32, 0u32, 0u32);
            for (i, &c) in chunk.iter().enumerate() {
                want.0 |= u32::from(c == b'"') << i;
                want.1 |= u32::from(c == b'[' || c == b'{') << i;
                want.2 |= u32::from(c == b']' || c == b'}') << i;
            }
            assert_eq!(chunk_masks(&chunk), want);
            assert_eq!(chunk_masks_portable(&chunk), want);
        }
    }

    #[test]
    fn quote_masks_agree() {
        for chunk in random_chunks(b"\"\\ab.", 2000) {
            let mut want = (0u32, 0u32);
            for (i, &c) in chunk.iter().enumerate() {
                want.0 |= u32::from(c == b'"') << i;
                want.1 |= u32::from(c == b'\\') << i;
            }
            assert_eq!(quote_masks(&chunk), want);
        }
    }

    #[test]
    fn finds_quotes() {
        let text = br#"abcdefghijklmnopqrstuvwxyz0123456789"#;
        for at in 0..text.len() {
            for c in [b'"', b'\\'] {
                let mut t = text.to_vec();
                t[at] = c;
                for start in 0..=at {
                    assert_eq!(find_quote_or_backslash(&t, start), at);
                }
                assert_eq!(find_quote_or_backslash(&t, at + 1), t.len());
            }
        }
    }

    #[test]
    fn numbers() {
        for (t, ok) in [
            ("0", true),
            ("-0", true),
            ("1.5e-3", true),
            ("5e0", true),
            ("01", true), // scans "0" and stops; the caller sees the stray "1"
            ("-", false),
            ("1.", false),
            ("1e", false),
            (".5", false),
        ] {
            let mut c = Cursor::new(t.as_bytes());
            assert_eq!(c.number().is_ok(), ok, "{t}");
        }
    }

    #[test]
    fn unescapes() {
        let mut out = Vec::new();
        unescape(br#"a\"b\\c\u00e9\ud83d\ude00\n"#, &mut out).unwrap();
        assert_eq!(String::from_utf8(out.clone()).unwrap(), "a\"b\\cé😀\n");
        assert!(unescape(br"\x", &mut out).is_err());
        assert!(unescape(br"\ud83d", &mut out).is_err());
    }
}
