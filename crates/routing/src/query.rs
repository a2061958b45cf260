//! Query strings read the way Go's `url.ParseQuery` reads them, which is what kube-apiserver sees.
//!
//! Pairs are separated by `&`; a pair containing `;` is dropped (Go ≥ 1.17); `+` is a space;
//! a pair whose key or value holds an invalid `%` escape is dropped; only the first value of a
//! repeated key counts wherever kube-apiserver reads a single value.

use std::borrow::Cow;

use crate::path::{find_any, hex, split_at_byte};

/// A raw query string with Go `url.ParseQuery` semantics. Decoding happens lazily and borrows
/// whenever a key or value holds no `%` or `+`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Query<'a> {
    raw: &'a str,
}

impl<'a> Query<'a> {
    /// Wraps a raw query (without the leading `?`).
    pub fn new(raw: &'a str) -> Self {
        Query { raw }
    }

    /// Every decodable `(key, value)` pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)> + 'a {
        // One scan up front: a query without `%`, `+` or `;` (the usual case) needs no per-pair
        // checks or decoding.
        let simple = !self
            .raw
            .bytes()
            .any(|b| b == b'%' || b == b'+' || b == b';');
        Pairs {
            rest: Some(self.raw),
        }
        .filter_map(move |pair| {
            if pair.is_empty() {
                return None;
            }
            let (key, value) = split_at_byte(pair, b'=').unwrap_or((pair, ""));
            if simple {
                return Some((Cow::Borrowed(key), Cow::Borrowed(value)));
            }
            if pair.bytes().any(|b| b == b';') {
                return None;
            }
            Some((unescape(key)?, unescape(value)?))
        })
    }

    /// The first value of `key`, like Go's `Values.Get`; `None` when the key is absent.
    pub fn first(&self, key: &str) -> Option<Cow<'a, str>> {
        self.pairs().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` appears at all.
    pub fn has(&self, key: &str) -> bool {
        self.pairs().any(|(k, _)| k == key)
    }
}

/// The `&`-separated pieces of a query, found with a plain byte loop (pieces are short, where
/// `memchr`'s setup costs more than the search).
struct Pairs<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let (pair, after) = match split_at_byte(rest, b'&') {
            Some((pair, after)) => (pair, Some(after)),
            None => (rest, None),
        };
        self.rest = after;
        Some(pair)
    }
}

/// Go `url.QueryUnescape`: `+` → space, `%XX` → byte; `None` on an invalid escape.
/// Bytes that are not UTF-8 after decoding are replaced (Go would keep them raw).
///
/// The runs between escapes are copied whole, and an escape that decodes to ASCII is pushed as
/// a char: the result is built as a `String` and needs no UTF-8 check unless an escape decodes
/// to a byte ≥ 0x80 (then [`unescape_bytes`] does it byte by byte).
pub(crate) fn unescape(s: &str) -> Option<Cow<'_, str>> {
    unescape_stopping_at(s, [b'%', b'+'])
}

/// A raw query value as Go's `url.ParseQuery` keeps it: `None` when it holds a `;` (the pair is
/// dropped) or an invalid escape, else [`unescape`]d. One pass: the searches for escapes look
/// for `;` as well, where checking the value first and decoding it then would read it twice.
pub(crate) fn unescape_query_value(s: &str) -> Option<Cow<'_, str>> {
    unescape_stopping_at(s, [b'%', b'+', b';'])
}

/// [`unescape`], searching for the bytes of `stops` (`%`, `+`, and possibly `;`, which makes
/// the input invalid).
fn unescape_stopping_at<const N: usize>(s: &str, stops: [u8; N]) -> Option<Cow<'_, str>> {
    let Some(mut at) = find_any(s.as_bytes(), stops) else {
        return Some(Cow::Borrowed(s));
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        // `at` is the index of an ASCII `%`, `+` or `;`: a char boundary.
        out.push_str(rest.get(..at)?);
        let bytes = rest.as_bytes();
        let width = if bytes[at] == b'+' {
            out.push(' ');
            1
        } else if bytes[at] == b';' {
            return None;
        } else {
            let hi = bytes.get(at + 1).copied().and_then(hex)?;
            let lo = bytes.get(at + 2).copied().and_then(hex)?;
            let decoded = hi << 4 | lo;
            if !decoded.is_ascii() {
                // The rest of `s` has not been searched for a `;` yet.
                if stops.contains(&b';') && s.contains(';') {
                    return None;
                }
                return unescape_bytes(s).map(Cow::Owned);
            }
            out.push(char::from(decoded));
            3
        };
        // Past an ASCII `+` or an escape of ASCII hex digits: a char boundary.
        rest = rest.get(at + width..)?;
        match find_any(rest.as_bytes(), stops) {
            Some(next) => at = next,
            None => {
                out.push_str(rest);
                return Some(Cow::Owned(out));
            }
        }
    }
}

/// [`unescape`] byte by byte, for input whose escapes decode to non-ASCII bytes.
fn unescape_bytes(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (decoded, width) = match b {
            b'+' => (b' ', 1),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex)?;
                let lo = bytes.get(i + 2).copied().and_then(hex)?;
                (hi << 4 | lo, 3)
            }
            b => (b, 1),
        };
        out.push(decoded);
        i += width;
    }
    Some(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_parse_query_quirks() {
        let q = Query::new("a=1&a=2&b=x+y&c=%41&bad=%zz&semi=1;x=2&&=novalue&flag");
        assert_eq!(q.first("a").unwrap(), "1");
        assert_eq!(q.first("b").unwrap(), "x y");
        assert_eq!(q.first("c").unwrap(), "A");
        assert_eq!(Query::new("u=%E1%9B%92+x%41").first("u").unwrap(), "ᛒ xA");
        assert_eq!(Query::new("u=a%ffb").first("u").unwrap(), "a\u{fffd}b");
        assert_eq!(Query::new("u=%41%zz").first("u"), None);
        assert_eq!(q.first("bad"), None, "invalid escape drops the pair");
        assert_eq!(q.first("semi"), None, "a pair with ';' is dropped");
        assert_eq!(q.first("x"), None);
        assert_eq!(q.first("").unwrap(), "novalue");
        assert_eq!(q.first("flag").unwrap(), "");
        assert!(q.has("flag"));
        assert!(!q.has("missing"));
    }

    #[test]
    fn escaped_key() {
        let q = Query::new("w%61tch=true");
        assert_eq!(q.first("watch").unwrap(), "true");
    }

    proptest::proptest! {
        /// The run-copying decoder agrees with the byte-by-byte one on every input, escapes
        /// of ASCII and non-ASCII bytes, bad escapes and `+` included.
        #[test]
        fn unescape_matches_byte_by_byte_decoding(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a", "Z", "+", "%", "%2", "%41", "%3D", "%3d", "%2F", "%7f", "%80", "%C3%A9",
                    "%E1%9B%92", "%ff", "%zz", "é", "ᛒ", "=", "&",
                ]),
                0..12,
            ),
        ) {
            let s: String = pieces.concat();
            proptest::prop_assert_eq!(
                unescape(&s).map(Cow::into_owned),
                unescape_bytes(&s)
            );
        }

        /// Decoding a query value in one pass agrees with checking it for `;` and then
        /// decoding it.
        #[test]
        fn query_value_is_checked_and_decoded_in_one_pass(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a", "Z", "+", "%", "%2", "%41", "%3D", "%3B", "%C3%A9", "%ff", "%zz", ";",
                    "é", "=", "abcdefgh",
                ]),
                0..12,
            ),
        ) {
            let s: String = pieces.concat();
            let reference = if s.contains(';') { None } else { unescape_bytes(&s) };
            proptest::prop_assert_eq!(unescape_query_value(&s).map(Cow::into_owned), reference);
        }
    }
}
