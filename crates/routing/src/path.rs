//! Percent-decoding of request paths, the way Go's `url.URL.Path` is derived, plus the checks
//! that keep a path from escaping the target its prefix names.

use std::borrow::Cow;

use crate::RouteError;

/// Percent-decodes a raw request path (Go's path unescaping: `%XX` only; `+` stays `+`).
///
/// Returns the input borrowed when it contains no `%`. An escape that is not two hex digits, or
/// bytes that do not form UTF-8 after decoding, are an error (Go's HTTP server answers those with
/// `400 Bad Request` before any handler runs).
pub fn decode_path(raw: &str) -> Result<Cow<'_, str>, RouteError> {
    if !raw.bytes().any(|b| b == b'%') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(RouteError::InvalidEscape),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| RouteError::InvalidUtf8)
}

/// `s` split around the first `byte` (an ASCII byte, so both sides are on char boundaries).
pub(crate) fn split_at_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    let i = find_byte(s.as_bytes(), byte)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The index of the first `byte` in `bytes`, eight bytes per step. The strings routing splits
/// are a few bytes to a few dozen long, where `memchr`'s set-up costs more than the search and
/// a byte loop takes a step (and a branch) per byte.
pub(crate) fn find_byte(bytes: &[u8], byte: u8) -> Option<usize> {
    find_any(bytes, [byte])
}

/// The index of the first `a` or `b` in `bytes`, eight bytes per step.
pub(crate) fn find_either(bytes: &[u8], a: u8, b: u8) -> Option<usize> {
    find_any(bytes, [a, b])
}

/// The index of the first byte of `set` in `bytes`, eight bytes per step. Inlined: the
/// searches are short and their callers few, and a call costs as much as a step.
#[inline(always)]
pub(crate) fn find_any<const N: usize>(bytes: &[u8], set: [u8; N]) -> Option<usize> {
    let mut start = 0;
    while let Some(word) = bytes
        .get(start..start + 8)
        .and_then(|chunk| <[u8; 8]>::try_from(chunk).ok())
    {
        let hits = set_bytes_in(u64::from_le_bytes(word), set);
        if hits != 0 {
            return Some(start + first_hit(hits));
        }
        start += 8;
    }
    let tail = bytes.get(start..)?;
    if tail.is_empty() {
        return None;
    }
    // After at least one whole word, the last eight bytes are tested as one more word: the
    // bytes before the tail are known not to be in the set, so a hit is in the tail. (A byte
    // loop takes a step and a branch per byte.)
    if start >= 8
        && let Some(word) = word_at(bytes, bytes.len() - 8)
    {
        let hits = set_bytes_in(word, set);
        return (hits != 0).then(|| bytes.len() - 8 + first_hit(hits));
    }
    tail.iter().position(|c| set.contains(c)).map(|i| start + i)
}

/// The eight bytes of `bytes` from `start` as a little-endian word, if there are eight.
fn word_at(bytes: &[u8], start: usize) -> Option<u64> {
    let chunk = bytes.get(start..start.checked_add(8)?)?;
    <[u8; 8]>::try_from(chunk).ok().map(u64::from_le_bytes)
}

/// The high bit of each byte of `word` that is in `set`, exact up to the first one. Bytes equal
/// to a byte of the set become zero in its test; the classic zero-byte test then sets the high
/// bit of the first zero byte exactly (later bits may be false positives, never earlier ones),
/// so OR-ing the tests keeps the lowest bit exact.
fn set_bytes_in<const N: usize>(word: u64, set: [u8; N]) -> u64 {
    set.iter().fold(0, |hits, &byte| {
        let x = word ^ (ONES * u64::from(byte));
        hits | (x.wrapping_sub(ONES) & !x & HIGHS)
    })
}

/// The index of the byte whose high bit is the lowest set bit of `hits` (non-zero).
fn first_hit(hits: u64) -> usize {
    (hits.trailing_zeros() / 8) as usize
}

/// The value of an ASCII hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks the raw path: it must start with `/` and hold no control byte, NUL, backslash, or
/// percent-escape that decodes to `/`, `\`, or a control byte. Such escapes mean different things
/// to different servers, so they could make the gateway authorize one path while an upstream
/// serves another.
pub(crate) fn check_raw(raw: &str) -> Result<(), RouteError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(RouteError::NotAbsolute);
    }
    if is_plain(bytes) {
        return Ok(());
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x20 || b == 0x7f {
            return Err(RouteError::ControlCharacter);
        }
        if b == b'\\' {
            return Err(RouteError::Backslash);
        }
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            let decoded = match (hi, lo) {
                (Some(hi), Some(lo)) => hi << 4 | lo,
                _ => return Err(RouteError::InvalidEscape),
            };
            match decoded {
                b'/' => return Err(RouteError::EncodedSlash),
                b'\\' => return Err(RouteError::Backslash),
                d if d < 0x20 || d == 0x7f => return Err(RouteError::ControlCharacter),
                _ => {}
            }
            i += 3;
            continue;
        }
        i += 1;
    }
    Ok(())
}

/// Checks the segments of a raw path: no empty segment (`//`) except a single trailing slash,
/// and no dot segment (`.`, `..`, or their escaped forms such as `%2e%2E`).
pub(crate) fn check_segments(raw: &str) -> Result<(), RouteError> {
    if is_plain(raw.as_bytes()) {
        return check_plain_segments(raw.as_bytes());
    }
    let body = raw.strip_prefix('/').unwrap_or(raw);
    if body.is_empty() {
        return Ok(());
    }
    let body = body.strip_suffix('/').unwrap_or(body);
    for segment in body.split('/') {
        if segment.is_empty() {
            return Err(RouteError::EmptySegment);
        }
        if is_dot_segment(segment) {
            return Err(RouteError::DotSegment);
        }
    }
    Ok(())
}

/// Whether a path needs none of the precise checks: it starts with `/` and has no byte that
/// needs a closer look ([`is_plain`]) and no `//` or `/.` (so no empty or dot segment, except a
/// possible trailing `/`, which is allowed).
pub(crate) fn is_plain_path(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    // The scan over (previous, current) pairs vectorizes 32 pairs at a time, but the pairs
    // left over after the last whole block would take narrower loops and then a byte loop of
    // ~15 instructions per byte. So the scan covers a multiple of 32 pairs and then the last
    // 32 pairs again (overlapping, which an OR does not mind); a shorter path is padded with a
    // harmless byte. (Blocks written as fixed-size arrays are not vectorized well: LLVM
    // shuffles bytes about.)
    let pairs = bytes.len() - 1;
    if pairs < PAIRS_PER_BLOCK {
        return !has_suspicious_pair(&padded_block(bytes));
    }
    let whole = pairs - pairs % PAIRS_PER_BLOCK;
    let last = &bytes[pairs - PAIRS_PER_BLOCK..];
    !(has_suspicious_pair(&bytes[..=whole]) | (whole != pairs && has_suspicious_pair(last)))
}

/// A path shorter than a block, padded with a harmless byte. It is copied as two overlapping
/// chunks of a fixed size (16, 8, 4 or 1 bytes), which compile to a load and a store each,
/// where a copy of its length would call `memcpy`.
fn padded_block(bytes: &[u8]) -> [u8; PAIRS_PER_BLOCK + 1] {
    let mut padded = [b'a'; PAIRS_PER_BLOCK + 1];
    let len = bytes.len().min(PAIRS_PER_BLOCK + 1);
    match len {
        16.. => copy_ends::<16>(&mut padded, bytes, len),
        8.. => copy_ends::<8>(&mut padded, bytes, len),
        4.. => copy_ends::<4>(&mut padded, bytes, len),
        _ => copy_ends::<1>(&mut padded, bytes, len),
    }
    padded
}

/// Copies the first `N` and the last `N` of the first `len` bytes of `from` (at least `N`, at
/// most `into`'s length) to the same places in `into`; for `N` = 1, byte by byte.
fn copy_ends<const N: usize>(into: &mut [u8], from: &[u8], len: usize) {
    if N == 1 {
        for (to, from) in into.iter_mut().zip(&from[..len]) {
            *to = *from;
        }
        return;
    }
    into[..N].copy_from_slice(&from[..N]);
    into[len - N..len].copy_from_slice(&from[len - N..len]);
}

/// The block [`has_suspicious_pair`]'s widest vector loop takes.
const PAIRS_PER_BLOCK: usize = 32;

/// Whether any byte after the first needs a closer look or is a `/` or `.` right after a `/`.
/// Branch-free over the bytes, so it vectorizes. The first byte needs no check of its own: it
/// is the path's leading `/`, or a byte an earlier block already checked.
fn has_suspicious_pair(bytes: &[u8]) -> bool {
    let after_first = bytes.get(1..).unwrap_or_default();
    bytes.iter().zip(after_first).fold(false, |acc, (&a, &b)| {
        acc | needs_a_closer_look(b) | ((a == b'/') & ((b == b'/') | (b == b'.')))
    })
}

/// A control byte, space, DEL, backslash or `%`.
fn needs_a_closer_look(b: u8) -> bool {
    (b <= b' ') | (b == 0x7f) | (b == b'\\') | (b == b'%')
}

/// Whether a path has no byte that needs a closer look: no control byte, space, DEL, backslash
/// or `%`. Written without short-circuiting so it compiles to a vector loop; almost every real
/// request path takes this way.
fn is_plain(bytes: &[u8]) -> bool {
    !bytes
        .iter()
        .fold(false, |bad, &b| bad | needs_a_closer_look(b))
}

/// [`check_segments`] for a plain path (no escapes): one scan, no splitting.
fn check_plain_segments(bytes: &[u8]) -> Result<(), RouteError> {
    let body = bytes.get(1..).unwrap_or_default();
    let mut start = 0;
    for (i, &b) in body.iter().enumerate() {
        if b == b'/' {
            check_plain_segment(&body[start..i])?;
            start = i + 1;
        }
    }
    match &body[start..] {
        // A trailing slash (or the bare root) leaves an empty last segment, which is fine.
        [] => Ok(()),
        last => check_plain_segment(last),
    }
}

fn check_plain_segment(segment: &[u8]) -> Result<(), RouteError> {
    match segment {
        [] => Err(RouteError::EmptySegment),
        b"." | b".." => Err(RouteError::DotSegment),
        _ => Ok(()),
    }
}

/// `.` or `..`, with any of the dots possibly written as `%2e`/`%2E`.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment;
    let mut dots = 0;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
        } else if rest.len() >= 3 && rest.as_bytes()[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

/// Byte classes of RFC 1123 labels, one table lookup per byte (prefix names are checked on
/// every request).
const LABEL_CLASS: [u8; 256] = name_class_table(false, b"-");

/// A table of byte classes for names made of ASCII alphanumerics (lowercase only, unless
/// `uppercase`) with `inner` bytes allowed between them: [`ANYWHERE`] for every byte a name may
/// hold, and [`AT_THE_ENDS`] as well for the alphanumerics.
pub(crate) const fn name_class_table(uppercase: bool, inner: &[u8]) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_lowercase() || c.is_ascii_digit() || (uppercase && c.is_ascii_uppercase()) {
            table[b] = ANYWHERE | AT_THE_ENDS;
        }
        b += 1;
    }
    let mut i = 0;
    while i < inner.len() {
        table[inner[i] as usize] = ANYWHERE;
        i += 1;
    }
    table
}
/// A byte a name may hold.
pub(crate) const ANYWHERE: u8 = 1;
/// A byte a name may start and end with.
pub(crate) const AT_THE_ENDS: u8 = 2;

/// How many bytes at the start of `bytes` may appear in an RFC 1123 label (`[a-z0-9-]`).
pub(crate) fn label_prefix_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| LABEL_CLASS[usize::from(b)] == 0)
        .unwrap_or(bytes.len())
}

/// [`is_dns1123_label`] for a string already known to hold only `[a-z0-9-]`
/// ([`label_prefix_len`]): only its length and its ends are left to check.
pub(crate) fn is_dns1123_label_of_label_bytes(s: &str) -> bool {
    let at_the_ends = |c: &u8| LABEL_CLASS[usize::from(*c)] & AT_THE_ENDS != 0;
    let bytes = s.as_bytes();
    bytes.len() <= 63
        && bytes.first().is_some_and(at_the_ends)
        && bytes.last().is_some_and(at_the_ends)
}

/// An RFC 1123 label: 1–63 characters of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_label_any_len(s)
}

/// An RFC 1123 label without the 63-character limit (a DNS-1123 subdomain part).
pub(crate) fn is_dns1123_label_any_len(s: &str) -> bool {
    let class = |c: &u8| LABEL_CLASS[usize::from(*c)];
    match s.as_bytes() {
        [] => false,
        b @ [first, .., last] | b @ [first @ last] => {
            // Branch-free over the bytes: names are short and almost always valid.
            class(first) & class(last) & AT_THE_ENDS != 0
                && b.iter().fold(ANYWHERE, |all, c| all & class(c)) != 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        assert_eq!(decode_path("/a%20b").unwrap(), "/a b");
        assert_eq!(decode_path("/a+b").unwrap(), "/a+b");
        assert!(matches!(decode_path("/a").unwrap(), Cow::Borrowed(_)));
        assert_eq!(decode_path("/a%zz"), Err(RouteError::InvalidEscape));
        assert_eq!(decode_path("/a%2"), Err(RouteError::InvalidEscape));
        assert_eq!(decode_path("/a%ff"), Err(RouteError::InvalidUtf8));
        assert_eq!(decode_path("/%E1%9B%92").unwrap(), "/ᛒ");
    }

    #[test]
    fn find_byte_finds_the_first_occurrence() {
        let text = b"kubernetes/cluster/prod//api/v1/namespaces/default/pods?x=1&y=2";
        for len in 0..=text.len() {
            let s = &text[..len];
            for byte in [b'/', b'&', b'=', b'?', b'k', b's', 0, 0x80, 0xff] {
                assert_eq!(
                    find_byte(s, byte),
                    s.iter().position(|&b| b == byte),
                    "{byte} in {:?}",
                    String::from_utf8_lossy(s)
                );
            }
        }
        // Bytes around the searched one whose differences borrow across byte lanes.
        for word in [
            [1u8, 0, 1, 0, 0x2f, 0, 0, 0],
            [0x30, 0x2e, 0x2f, 0x2f, 0, 0, 0, 0],
        ] {
            assert_eq!(find_byte(&word, b'/'), word.iter().position(|&b| b == b'/'));
            assert_eq!(find_byte(&word, 0), word.iter().position(|&b| b == 0));
            assert_eq!(find_byte(&word, 1), word.iter().position(|&b| b == 1));
        }
    }

    proptest::proptest! {
        #[test]
        fn find_byte_is_the_first_position(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![0u8, 1, 0x2e, 0x2f, 0x30, 0x7f, 0x80, 0xff]),
                0..40,
            ),
            byte in proptest::sample::select(vec![0u8, 1, 0x2e, 0x2f, 0x80, 0xff]),
        ) {
            proptest::prop_assert_eq!(find_byte(&bytes, byte), bytes.iter().position(|&b| b == byte));
        }

        #[test]
        fn find_either_is_the_first_position_of_either(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![0u8, 1, 0x25, 0x26, 0x2b, 0x3d, 0x3c, 0x7f, 0x80, 0xff]),
                0..40,
            ),
            a in proptest::sample::select(vec![0u8, 0x25, 0x26, 0x3d, 0x80]),
            b in proptest::sample::select(vec![1u8, 0x2b, 0x26, 0x3c, 0xff]),
        ) {
            proptest::prop_assert_eq!(
                find_either(&bytes, a, b),
                bytes.iter().position(|&c| c == a || c == b)
            );
        }

        #[test]
        fn find_any_is_the_first_position_of_any(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![0u8, 1, 0x21, 0x25, 0x2b, 0x2c, 0x3b, 0x3d, 0x5c, 0x80, 0xff]),
                0..40,
            ),
        ) {
            let set = [b'=', b'!', b'\\', b','];
            proptest::prop_assert_eq!(find_any(&bytes, set), bytes.iter().position(|c| set.contains(c)));
            let set = [b'%', b'+', b';'];
            proptest::prop_assert_eq!(find_any(&bytes, set), bytes.iter().position(|c| set.contains(c)));
        }

        #[test]
        fn label_in_one_pass_is_a_label(
            s in "[a-z0-9A-Z./%-]{0,70}",
        ) {
            let one_pass = label_prefix_len(s.as_bytes()) == s.len() && is_dns1123_label_of_label_bytes(&s);
            proptest::prop_assert_eq!(one_pass, is_dns1123_label(&s), "{:?}", s);
        }

        #[test]
        fn plain_path_scan_matches_the_byte_rules(
            mut tail in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'a', b'a', b'/', b'-']),
                0..100,
            ),
            injected in proptest::sample::select(vec![b'a', b'/', b'.', b'%', b' ', 0, 0x7f, b'\\', 0x80]),
            at in proptest::num::usize::ANY,
        ) {
            // Mostly harmless bytes with one that may not be, anywhere: every block boundary
            // gets its turn.
            if !tail.is_empty() {
                let at = at % tail.len();
                tail[at] = injected;
            }
            let mut path = vec![b'/'];
            path.extend(&tail);
            let text = String::from_utf8_lossy(&path).into_owned();
            let bytes = text.as_bytes();
            let reference = !bytes.windows(2).any(|w| {
                needs_a_closer_look(w[1]) || (w[0] == b'/' && (w[1] == b'/' || w[1] == b'.'))
            });
            proptest::prop_assert_eq!(is_plain_path(&text), reference, "{:?}", text);
        }
    }

    #[test]
    fn dot_segments() {
        for s in [".", "..", "%2e", "%2E%2e", ".%2e", "%2e."] {
            assert!(is_dot_segment(s), "{s}");
        }
        for s in ["...", "a.", ".a", "%2e%2e%2e", "%2f", ""] {
            assert!(!is_dot_segment(s), "{s}");
        }
    }

    #[test]
    fn label_table_matches_the_character_rules() {
        let reference = |s: &[u8]| {
            let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            !s.is_empty()
                && alnum(s[0])
                && alnum(s[s.len() - 1])
                && s.iter().all(|&c| alnum(c) || c == b'-')
        };
        for a in 0..=255u8 {
            for b in [b'a', b'-', b'0', b'Z', b'.', 0x80] {
                for s in [
                    vec![a],
                    vec![a, b],
                    vec![b, a],
                    vec![b'x', a, b'y'],
                    vec![a, a, a],
                ] {
                    let text = String::from_utf8_lossy(&s).into_owned();
                    assert_eq!(
                        is_dns1123_label_any_len(&text),
                        reference(text.as_bytes()),
                        "{s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn labels() {
        assert!(is_dns1123_label("a"));
        assert!(is_dns1123_label("prod-1"));
        assert!(!is_dns1123_label("Prod"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a-"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_label(&"a".repeat(63)));
    }
}
