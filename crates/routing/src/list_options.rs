//! The list options a collection request's RequestInfo depends on, read from the raw query the
//! way kube-apiserver reads them (Go's `url.ParseQuery`, then its ListOptions decoding).

use std::borrow::Cow;

use crate::path::{find_either, hex, split_at_byte};
use crate::query::{unescape, unescape_query_value};
use crate::selectors::{self, LabelSelector};

/// The first values of `watch`, `limit`, `timeoutSeconds`, `fieldSelector` and `labelSelector`,
/// collected in one pass over the query.
///
/// Values are kept as written and decoded only when used: most are never used, and a query
/// rarely escapes them. Only the selectors, which RequestInfo returns, are decoded up front
/// (allocating only when they hold an escape).
#[derive(Default)]
pub(crate) struct ListOptions<'a> {
    watch: Option<&'a str>,
    limit: Option<&'a str>,
    timeout_seconds: Option<&'a str>,
    /// The field selector as written in the query (still escaped).
    raw_field_selector: &'a str,
    field_selector: Option<Cow<'a, str>>,
    label_selector: Option<Cow<'a, str>>,
}

impl<'a> ListOptions<'a> {
    /// Reads the options from a raw query (without the leading `?`).
    ///
    /// Go's `url.ParseQuery` drops a pair holding `;` or an invalid `%` escape, and decodes
    /// `%XX` and `+` in keys and values. Only pairs naming an option can matter, so only they
    /// are checked: a key is decoded only when it holds an escape, and a value is checked only
    /// when its key names an option.
    pub(crate) fn scan(query: &'a str) -> Self {
        let mut options = ListOptions::default();
        let mut rest = query;
        while !rest.is_empty() {
            // Clients write the options' names as they are: compared as literals, such a key
            // needs no search for its end and no match on it.
            if let Some((param, value, after)) = literal_option(rest) {
                rest = after;
                options.offer(param, value);
                continue;
            }
            // A pair whose key cannot name an option is skipped with one search for its end.
            if !rest
                .as_bytes()
                .first()
                .is_some_and(|&b| may_start_an_option(b))
            {
                rest = split_at_byte(rest, b'&').map_or("", |(_, after)| after);
                continue;
            }
            // One pass over each pair: the key ends at the first `=` or `&`, the value at the
            // next `&`.
            let (key, value, after) = match find_either(rest.as_bytes(), b'=', b'&') {
                None => (rest, "", ""),
                Some(i) if rest.as_bytes()[i] == b'&' => (&rest[..i], "", &rest[i + 1..]),
                Some(i) => {
                    let (key, rest) = (&rest[..i], &rest[i + 1..]);
                    match split_at_byte(rest, b'&') {
                        Some((value, after)) => (key, value, after),
                        None => (key, rest, ""),
                    }
                }
            };
            rest = after;
            let param = match Param::named(key) {
                Some(param) => param,
                // Only an escape can make another key decode to a name.
                None if key.contains('%') => match unescape(key) {
                    // A pair holding `;` is dropped, so its key can never count.
                    Some(key) if !key.contains(';') => match Param::named(&key) {
                        Some(param) => param,
                        None => continue,
                    },
                    _ => continue,
                },
                None => continue,
            };
            options.offer(param, value);
        }
        options
    }

    /// Keeps `value` (still escaped) if it is valid and the parameter's first valid value.
    /// Selectors are decoded here, which checks them too.
    #[inline(always)]
    fn offer(&mut self, param: Param, value: &'a str) {
        let slot = match param {
            Param::Watch => &mut self.watch,
            Param::Limit => &mut self.limit,
            Param::TimeoutSeconds => &mut self.timeout_seconds,
            Param::FieldSelector => {
                if self.field_selector.is_none() {
                    self.field_selector = unescape_query_value(value);
                    self.raw_field_selector = value;
                }
                return;
            }
            Param::LabelSelector => {
                if self.label_selector.is_none() {
                    self.label_selector = unescape_query_value(value);
                }
                return;
            }
        };
        if slot.is_none() && value_is_valid(value) {
            *slot = Some(value);
        }
    }

    /// Whether a collection GET is a `watch` (else a `list`), and the name a `metadata.name`
    /// field selector pins (a valid path segment name only), following how kube-apiserver
    /// decodes ListOptions — including its fallback when any option fails to decode.
    pub(crate) fn list_or_watch(&self) -> (bool, Option<Cow<'a, str>>) {
        match self.decode() {
            Ok((watch, name)) => (watch, name.filter(|n| is_path_segment_name(n))),
            // Everything parsed is discarded; only a present `watch` value still counts.
            Err(()) => (self.watch(), None),
        }
    }

    /// The decoded field and label selectors (empty when absent).
    pub(crate) fn selectors(self) -> (Cow<'a, str>, Cow<'a, str>) {
        (
            self.field_selector.unwrap_or_default(),
            self.label_selector.unwrap_or_default(),
        )
    }

    /// Whether `watch` is present and true.
    fn watch(&self) -> bool {
        self.watch.is_some_and(raw_go_bool)
    }

    /// Decodes the ListOptions kube-apiserver would decode, returning whether it is a watch and
    /// the `metadata.name` the field selector pins, or `Err` if any option fails to decode. Only
    /// options that can fail are checked: selectors must parse and integers must be integers.
    fn decode(&self) -> Result<(bool, Option<Cow<'a, str>>), ()> {
        for int in [self.limit, self.timeout_seconds].into_iter().flatten() {
            if !is_plain_int64(int) {
                unescape(int).ok_or(())?.parse::<i64>().map_err(drop)?;
            }
        }
        if let Some(labels) = &self.label_selector {
            LabelSelector::validate(labels).map_err(drop)?;
        }
        let name = match &self.field_selector {
            None => None,
            Some(Cow::Borrowed(s)) => selectors::exact_name(s).map_err(drop)?,
            Some(Cow::Owned(s)) => selectors::exact_name(s).map_err(drop)?.map(|name| {
                // The name is usually written unescaped at the end of the raw selector
                // (`metadata.name%3Dweb`): borrow it from there rather than copy it.
                match self.raw_field_selector.strip_suffix(&*name) {
                    Some(before) => Cow::Borrowed(&self.raw_field_selector[before.len()..]),
                    None => Cow::Owned(name.into_owned()),
                }
            }),
        };
        Ok((self.watch(), name))
    }
}

/// The query parameters RequestInfo reads.
#[derive(Clone, Copy)]
enum Param {
    Watch,
    Limit,
    TimeoutSeconds,
    FieldSelector,
    LabelSelector,
}

impl Param {
    fn named(key: &str) -> Option<Self> {
        Some(match key {
            "watch" => Param::Watch,
            "limit" => Param::Limit,
            "timeoutSeconds" => Param::TimeoutSeconds,
            "fieldSelector" => Param::FieldSelector,
            "labelSelector" => Param::LabelSelector,
            _ => return None,
        })
    }
}

/// The option the first pair of `query` names literally (its key is exactly the option's name),
/// its raw value and what follows the pair; `None` for any other pair.
fn literal_option(query: &str) -> Option<(Param, &str, &str)> {
    let (param, after_key) = match query.as_bytes().first()? {
        b'w' => (Param::Watch, query.strip_prefix("watch")?),
        b'l' => match query.strip_prefix("limit") {
            Some(after_key) => (Param::Limit, after_key),
            None => (Param::LabelSelector, query.strip_prefix("labelSelector")?),
        },
        b't' => (Param::TimeoutSeconds, query.strip_prefix("timeoutSeconds")?),
        b'f' => (Param::FieldSelector, query.strip_prefix("fieldSelector")?),
        _ => return None,
    };
    // The key ends at the first `=` or `&`; the value at the next `&`. Both are ASCII, so the
    // splits are on char boundaries.
    match after_key.as_bytes().first() {
        None => Some((param, "", "")),
        Some(b'&') => Some((param, "", after_key.get(1..)?)),
        Some(b'=') => {
            let after_equals = after_key.get(1..)?;
            Some(match split_at_byte(after_equals, b'&') {
                Some((value, after)) => (param, value, after),
                None => (param, after_equals, ""),
            })
        }
        // A longer key (or an escaped one) that only starts with the name.
        Some(_) => None,
    }
}

/// Whether a key starting with `first` may name an option, literally or once decoded: decoding
/// keeps every byte but `%XX` (and `+`, which becomes a space, which no name has), so the key
/// starts with `%` or with a name's first letter.
fn may_start_an_option(first: u8) -> bool {
    matches!(first, b'%' | b'w' | b'l' | b't' | b'f')
}

/// Whether Go's `url.ParseQuery` keeps a pair with this (raw) value: no `;`, and every `%`
/// starts a two-hex-digit escape.
fn value_is_valid(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b';' => return false,
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                if hi.is_none() || lo.is_none() {
                    return false;
                }
                i += 3;
            }
            _ => i += 1,
        }
    }
    true
}

/// Whether `raw` is 1–18 decimal digits: an `int64` for certain, with no escape to decode (the
/// usual `limit=500`). Anything else is decoded and parsed.
fn is_plain_int64(raw: &str) -> bool {
    (1..=18).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit())
}

/// apimachinery `IsValidPathSegmentName`: not `.` or `..`, and no `/` or `%`.
fn is_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.bytes().any(|b| b == b'/' || b == b'%')
}

/// [`go_bool`] of a raw (valid, still escaped) value. The values clients send are decided
/// without decoding.
fn raw_go_bool(raw: &str) -> bool {
    match raw {
        "true" | "1" => true,
        "false" | "0" => false,
        raw => unescape(raw).is_some_and(|v| go_bool(&v)),
    }
}

/// Go's `Convert_Slice_string_To_bool` on a first value: `0` and `false` (any case) are false,
/// everything else — including the empty string — is true.
fn go_bool(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_validity_matches_decoding() {
        for s in [
            "",
            "a",
            "%41",
            "a%2",
            "%zz",
            "%4",
            "%%41",
            "x%41%42",
            "+%2B",
            "%e1%9B%92",
        ] {
            assert_eq!(value_is_valid(s), unescape(s).is_some(), "{s:?}");
        }
        assert!(!value_is_valid("a;b"));
        assert!(!value_is_valid("%41;"));
    }

    #[test]
    fn first_valid_value_wins() {
        let options = ListOptions::scan("limit=%zz&limit=5&watch=1;x&w%61tch=0&watch=1");
        assert_eq!(options.limit, Some("5"));
        assert_eq!(
            options.watch,
            Some("0"),
            "`watch=1;x` is dropped, `w%61tch` decodes"
        );
        let options =
            ListOptions::scan("labelSelector=a%3Db&labelSelector=c&fieldSelector=x+%3D+y");
        let (fields, labels) = options.selectors();
        assert_eq!((&*fields, &*labels), ("x = y", "a=b"));
    }

    proptest::proptest! {
        /// The literal shortcuts of `raw_go_bool` agree with decoding the value first.
        #[test]
        fn raw_go_bool_agrees_with_decoding(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "true", "false", "FALSE", "fAlSe", "0", "1", "%30", "%66alse", "+", "t", "",
                ]),
                0..3,
            ),
        ) {
            let raw = pieces.concat();
            if let Some(decoded) = unescape(&raw) {
                proptest::prop_assert_eq!(raw_go_bool(&raw), go_bool(&decoded), "{:?}", raw);
            }
        }
    }

    #[test]
    fn plain_integers_are_int64() {
        for s in ["0", "500", "007", "999999999999999999"] {
            assert!(is_plain_int64(s), "{s:?}");
            assert!(s.parse::<i64>().is_ok(), "{s:?}");
        }
        // Not plain, so decoded and parsed: 19 digits may or may not fit, signs and escapes
        // need the full parse.
        for s in ["", "+5", "-5", "%35", "5 ", "1e3", "9223372036854775807"] {
            assert!(!is_plain_int64(s), "{s:?}");
        }
        let decodes = |query| ListOptions::scan(query).decode().is_ok();
        assert!(decodes("limit=9223372036854775807&timeoutSeconds=%2D5"));
        assert!(!decodes("limit=9223372036854775808"));
        assert!(!decodes("timeoutSeconds=1e3"));
        assert!(!decodes("limit=5&timeoutSeconds=%zz&timeoutSeconds=x"));
    }

    proptest::proptest! {
        /// The one-pass scan finds the same first values as Go's `url.ParseQuery` followed by
        /// `Values.Get`, which [`crate::Query`] implements pair by pair.
        #[test]
        fn scan_agrees_with_parse_query(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "watch", "w%61tch", "%77atch", "limit", "fieldSelector", "labelSelector",
                    "timeoutSeconds", "wat", "ch", "x", "=", "=", "&", "&", ";", "%", "%3D",
                    "limitx", "label", "timeout", "fieldSelectorSelector",
                    "%zz", "+", "1", "a", "%41", "%e1%9b%92",
                ]),
                0..16,
            ),
        ) {
            let query = pieces.concat();
            let reference = crate::Query::new(&query);
            let options = ListOptions::scan(&query);
            let decoded = |raw: Option<&str>| raw.and_then(unescape).map(Cow::into_owned);
            let first = |key| reference.first(key).map(Cow::into_owned);
            proptest::prop_assert_eq!(decoded(options.watch), first("watch"));
            proptest::prop_assert_eq!(decoded(options.limit), first("limit"));
            proptest::prop_assert_eq!(decoded(options.timeout_seconds), first("timeoutSeconds"));
            proptest::prop_assert_eq!(
                options.field_selector.as_ref().map(|s| s.to_string()),
                first("fieldSelector")
            );
            if options.field_selector.is_some() {
                proptest::prop_assert_eq!(decoded(Some(options.raw_field_selector)), first("fieldSelector"));
            }
            proptest::prop_assert_eq!(
                options.label_selector.as_ref().map(|s| s.to_string()),
                first("labelSelector")
            );
        }
    }
}
