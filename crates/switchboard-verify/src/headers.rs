//! Read-only access to request headers, so the crate needs no HTTP library.

/// Looks up one request header by name. Implementations must match names ASCII
/// case-insensitively and, when a header repeats, return the first value.
pub trait HeaderLookup {
    /// The raw value of header `name`, if present.
    fn get(&self, name: &str) -> Option<&[u8]>;
}

impl HeaderLookup for [(String, Vec<u8>)] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

impl HeaderLookup for Vec<(String, Vec<u8>)> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        HeaderLookup::get(self.as_slice(), name)
    }
}

/// The shape [`crate::sign`] returns, so signed headers can be verified directly.
impl HeaderLookup for [(String, String)] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

impl HeaderLookup for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        HeaderLookup::get(self.as_slice(), name)
    }
}

impl HeaderLookup for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

impl<const N: usize> HeaderLookup for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        HeaderLookup::get(self.as_slice(), name)
    }
}

/// True for a non-empty RFC 9110 token, the syntax of header names.
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
