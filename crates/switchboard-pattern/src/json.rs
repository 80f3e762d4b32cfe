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

/// Bytes that matter while skipping a container.
static STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t[b'{' as usize] = true;
    t[b'}' as usize] = true;
    t
};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` that is zero (exact for the lowest one).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// Index of the first byte at or after `j` that may be structural, eight
/// bytes at a time. `b & 0xD9 == 0x59` holds for `[ ] { }` (and for the
/// harmless `Y _ y DEL`, which the caller re-checks); quotes are tested
/// separately. Returns `b.len()` when there is none.
#[inline]
fn next_candidate(b: &[u8], mut j: usize) -> usize {
    while j + 8 <= b.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&b[j..j + 8]);
        let w = u64::from_le_bytes(word);
        let m = zero_bytes((w & 0xD9D9_D9D9_D9D9_D9D9) ^ 0x5959_5959_5959_5959)
            | zero_bytes(w ^ 0x2222_2222_2222_2222);
        if m != 0 {
            return j + (m.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while j < b.len() && !STRUCTURAL[b[j] as usize] {
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
            match memchr::memchr2(b'"', b'\\', &self.b[j..]) {
                Some(off) => {
                    let at = j + off;
                    if self.b[at] == b'"' {
                        self.i = at + 1;
                        return Ok((start, at, escaped));
                    }
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

    fn skip_container(&mut self) -> Result<(), EventError> {
        let b = self.b;
        let mut depth = 0usize;
        let mut j = self.i;
        while j < b.len() {
            j = next_candidate(b, j);
            let Some(&c) = b.get(j) else { break };
            if !STRUCTURAL[c as usize] {
                j += 1;
                continue;
            }
            match c {
                b'"' => {
                    self.i = j;
                    self.string_span()?;
                    j = self.i;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                _ => {
                    depth -= 1;
                    if depth == 0 {
                        self.i = j + 1;
                        return Ok(());
                    }
                }
            }
            j += 1;
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
