//! Value-level building blocks shared by the parser and the matcher:
//! number keys, case folding, wildcards, numeric ranges and CIDR blocks.

use std::net::IpAddr;

/// The identity of a number for exact matching.
///
/// Integers with more than 15 significant digits that fit in 64 bits keep
/// their exact digits, so `12345678901234567890` and `12345678901234567891`
/// differ (a float64 comparison would equate them). Every other number is
/// compared as a float64, so `300`, `300.0` and `3.0e2` are equal and `-0`
/// equals `0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum NumKey {
    /// Bits of the float64 value, with `-0.0` normalised to `0.0`.
    F(u64),
    /// Canonical decimal digits (with a leading `-` when negative).
    Int(Box<str>),
}

fn f64_key(f: f64) -> NumKey {
    let f = if f == 0.0 { 0.0 } else { f };
    NumKey::F(f.to_bits())
}

/// Key of a number written as JSON text. `lit` must satisfy the JSON number
/// grammar; returns `None` otherwise.
pub(crate) fn num_key_from_literal(lit: &str) -> Option<NumKey> {
    let is_int = !lit.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
    if is_int {
        let digits = lit.strip_prefix('-').unwrap_or(lit);
        if digits.len() > 15 {
            let fits = if lit.starts_with('-') {
                lit.parse::<i64>().is_ok()
            } else {
                lit.parse::<u64>().is_ok()
            };
            if fits {
                return Some(NumKey::Int(lit.into()));
            }
        }
    }
    let f: f64 = lit.parse().ok()?;
    Some(f64_key(f))
}

/// Key of a number already parsed by serde_json. Agrees with
/// [`num_key_from_literal`] on the text serde_json parsed it from.
pub(crate) fn num_key_from_number(n: &serde_json::Number) -> Option<NumKey> {
    if let Some(u) = n.as_u64() {
        if u >= 1_000_000_000_000_000 {
            return Some(NumKey::Int(u.to_string().into()));
        }
        return Some(f64_key(u as f64));
    }
    if let Some(i) = n.as_i64() {
        if i <= -1_000_000_000_000_000 {
            return Some(NumKey::Int(i.to_string().into()));
        }
        return Some(f64_key(i as f64));
    }
    n.as_f64().map(f64_key)
}

/// Writes a serde_json number as JSON text that [`num_key_from_literal`]
/// maps to the same key as [`num_key_from_number`].
pub(crate) fn write_number_literal(n: &serde_json::Number, out: &mut Vec<u8>) {
    use std::io::Write;
    if n.is_u64() || n.is_i64() {
        let _ = write!(out, "{n}");
    } else if let Some(f) = n.as_f64() {
        // `{:e}` always has an exponent, so the text is never taken for a
        // big integer, and it round-trips the float exactly.
        let _ = write!(out, "{f:e}");
    }
}

/// Case folding used by `equals-ignore-case` and the ignore-case variants of
/// `prefix`/`suffix`: every character is upper-cased then lower-cased, which
/// makes `ß` match `SS`, `ſ` match `S` and `ς` match `Σ`, close to
/// aws/event-ruler's per-character upper/lower alternatives.
pub(crate) fn fold_into(s: &str, out: &mut String) {
    out.clear();
    if s.is_ascii() {
        out.push_str(s);
        out.make_ascii_lowercase();
        return;
    }
    for c in s.chars() {
        for u in c.to_uppercase() {
            out.extend(u.to_lowercase());
        }
    }
}

/// [`fold_into`] for raw string bytes into a reusable buffer, in one pass
/// for ASCII (each byte lower-cased as it is copied; the common case).
/// Returns `false`, leaving `out` unspecified, when `b` is not UTF-8.
#[inline]
pub(crate) fn fold_bytes_into(b: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    out.reserve(b.len());
    for &c in b {
        if c >= 0x80 {
            return fold_bytes_unicode(b, out);
        }
        out.push(c.to_ascii_lowercase());
    }
    true
}

#[cold]
fn fold_bytes_unicode(b: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let Ok(text) = std::str::from_utf8(b) else {
        return false;
    };
    let mut buf = [0u8; 4];
    for c in text.chars() {
        for u in c.to_uppercase() {
            for l in u.to_lowercase() {
                out.extend_from_slice(l.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    true
}

pub(crate) fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    fold_into(s, &mut out);
    out
}

/// Byte equality as an inline loop: the values compared are short, and a
/// `memcmp` call costs more than the comparison (measured on citylots).
#[inline]
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[inline]
pub(crate) fn starts_with(s: &[u8], p: &[u8]) -> bool {
    s.len() >= p.len() && bytes_eq(&s[..p.len()], p)
}

#[inline]
pub(crate) fn ends_with(s: &[u8], p: &[u8]) -> bool {
    s.len() >= p.len() && bytes_eq(&s[s.len() - p.len()..], p)
}

/// A parsed `wildcard` pattern: literal pieces separated by `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wildcard {
    /// `pieces.len() - 1` stars sit between consecutive pieces.
    pieces: Vec<Box<[u8]>>,
}

/// Why a wildcard string was rejected.
pub(crate) enum WildcardError {
    BadEscape,
    ConsecutiveStars,
}

impl Wildcard {
    pub(crate) fn parse(s: &str) -> Result<Self, WildcardError> {
        let mut pieces = Vec::new();
        let mut cur = String::new();
        let mut chars = s.chars();
        let mut prev_star = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    match chars.next() {
                        Some(e @ ('*' | '\\')) => cur.push(e),
                        _ => return Err(WildcardError::BadEscape),
                    }
                    prev_star = false;
                }
                '*' => {
                    if prev_star {
                        return Err(WildcardError::ConsecutiveStars);
                    }
                    pieces.push(std::mem::take(&mut cur).into_bytes().into_boxed_slice());
                    prev_star = true;
                }
                c => {
                    cur.push(c);
                    prev_star = false;
                }
            }
        }
        pieces.push(cur.into_bytes().into_boxed_slice());
        Ok(Self { pieces })
    }

    pub(crate) fn stars(&self) -> usize {
        self.pieces.len() - 1
    }

    pub(crate) fn matches(&self, s: &[u8]) -> bool {
        let (first, rest) = match self.pieces.split_first() {
            Some(x) => x,
            None => return false,
        };
        let Some((last, middle)) = rest.split_last() else {
            return bytes_eq(s, first);
        };
        if s.len() < first.len() + last.len() || !starts_with(s, first) || !ends_with(s, last) {
            return false;
        }
        // Greedy leftmost placement of the middle pieces is optimal when the
        // only metacharacter is `*`.
        let mut window = &s[first.len()..s.len() - last.len()];
        for piece in middle {
            // A naive scan beats building a `memmem` searcher on short values.
            let found = if window.len() < 64 {
                window.windows(piece.len()).position(|w| bytes_eq(w, piece))
            } else {
                memchr::memmem::find(window, piece)
            };
            match found {
                Some(at) => window = &window[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

/// A numeric interval with optional open/closed bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Range {
    pub lo: f64,
    pub lo_incl: bool,
    pub hi: f64,
    pub hi_incl: bool,
}

impl Range {
    pub(crate) fn contains(&self, x: f64) -> bool {
        let above = if self.lo_incl {
            x >= self.lo
        } else {
            x > self.lo
        };
        let below = if self.hi_incl {
            x <= self.hi
        } else {
            x < self.hi
        };
        above && below
    }
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    v6: bool,
    network: u128,
    mask: u128,
}

impl Cidr {
    /// Parses `addr/len`. Like aws/event-ruler, `/32` (IPv4) and `/128`
    /// (IPv6) are rejected: an exact string match does that job.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let (addr, bits) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR block (expected address/bits)"))?;
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let bits: u32 = bits
            .parse()
            .map_err(|_| format!("{bits:?} is not a number of mask bits"))?;
        let (v6, width, value) = match ip {
            IpAddr::V4(a) => (false, 32, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, 128, u128::from(a)),
        };
        if bits >= width {
            let family = if v6 { "IPv6" } else { "IPv4" };
            return Err(format!("{family} mask bits must be < {width}"));
        }
        let mask = if bits == 0 {
            0
        } else {
            (u128::MAX << (width - bits)) & (u128::MAX >> (128 - width))
        };
        Ok(Self {
            v6,
            network: value & mask,
            mask,
        })
    }

    pub(crate) fn contains(&self, s: &str) -> bool {
        match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if !self.v6 => u128::from(u32::from(a)) & self.mask == self.network,
            Ok(IpAddr::V6(a)) if self.v6 => u128::from(a) & self.mask == self.network,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_keys_agree_between_literal_and_serde() {
        for lit in [
            "0",
            "-0",
            "300",
            "300.0",
            "3.0e2",
            "3E2",
            "12345678901234567890",
            "-9223372036854775808",
            "-12345678901234567890",
            "1e400",
            "0.30000000000000004",
            "123456789012345678901234",
            "1000000000000000",
            "999999999999999",
        ] {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(lit) else {
                continue;
            };
            let serde_json::Value::Number(n) = v else {
                panic!()
            };
            let mut text = Vec::new();
            write_number_literal(&n, &mut text);
            let text = String::from_utf8(text).unwrap();
            assert_eq!(
                num_key_from_literal(lit),
                num_key_from_number(&n),
                "literal {lit}"
            );
            assert_eq!(
                num_key_from_literal(&text),
                num_key_from_number(&n),
                "written {text}"
            );
        }
        assert_eq!(num_key_from_literal("300"), num_key_from_literal("3.0e2"));
        assert_eq!(num_key_from_literal("-0"), num_key_from_literal("0"));
        assert_ne!(
            num_key_from_literal("12345678901234567890"),
            num_key_from_literal("12345678901234567891")
        );
    }

    #[test]
    fn wildcard_cases() {
        let check = |w: &str, s: &str, want: bool| {
            let Ok(p) = Wildcard::parse(w) else {
                panic!("{w}")
            };
            assert_eq!(p.matches(s.as_bytes()), want, "{w} vs {s}");
        };
        check("*", "", true);
        check("a*", "a", true);
        check("*a", "ba", true);
        check("a*a", "a", false);
        check("a*a", "aa", true);
        check("a*b*c", "abc", true);
        check("a*b*c", "acbc", true);
        check("a*b*c", "acb", false);
        check(r"a\*b", "a*b", true);
        check(r"a\*b", "axb", false);
        check(r"a\\b", r"a\b", true);
        check("*/x", "a/b/x", true);
        assert!(matches!(
            Wildcard::parse("a**"),
            Err(WildcardError::ConsecutiveStars)
        ));
        assert!(matches!(
            Wildcard::parse(r"a\b"),
            Err(WildcardError::BadEscape)
        ));
        assert!(matches!(
            Wildcard::parse("a\\"),
            Err(WildcardError::BadEscape)
        ));
    }

    #[test]
    fn cidr_cases() {
        let net = Cidr::parse("10.0.0.0/24").unwrap();
        assert!(net.contains("10.0.0.255"));
        assert!(!net.contains("10.0.1.0"));
        assert!(!net.contains("::ffff:10.0.0.1"));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8::1"));
        assert!(v6.contains("2001:0db8:0000:0000:0000:0000:0000:0001"));
        assert!(!v6.contains("2001:db9::1"));
        assert!(Cidr::parse("10.0.0.1/32").is_err());
        assert!(Cidr::parse("::1/128").is_err());
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("1.2.3.4"));
    }

    #[test]
    fn folding() {
        let mut buf = Vec::new();
        for s in [
            "",
            "Van Ness",
            "MARKET",
            "17th",
            "Straße",
            "ΣΊΣΥΦΟΣ",
            "a\u{130}b",
            "~@[`{",
        ] {
            assert!(fold_bytes_into(s.as_bytes(), &mut buf), "{s}");
            assert_eq!(buf, fold(s).as_bytes(), "{s}");
        }
        assert!(!fold_bytes_into(b"ab\xff", &mut buf));
        assert_eq!(fold("ß"), fold("SS"));
        assert_eq!(fold("Straße"), fold("STRASSE"));
        assert_eq!(fold("ΣΊΣΥΦΟΣ"), fold("σίσυφος"));
        assert_eq!(fold("МОСКВА"), fold("москва"));
    }
}
