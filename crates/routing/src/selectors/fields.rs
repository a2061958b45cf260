//! Field selectors: `key=value`, `key==value`, `key!=value`, comma-separated, with `\,`, `\=`,
//! `\\` escapes in values.

use std::borrow::Cow;

use super::SelectorError;
use crate::path::{find_any, find_either};

/// A field selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `=`
    Equals,
    /// `==`
    DoubleEquals,
    /// `!=`
    NotEquals,
}

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement<'a> {
    /// The field path, e.g. `metadata.name` (never unescaped, as in apimachinery).
    pub field: &'a str,
    /// The operator.
    pub operator: FieldOperator,
    /// The unescaped value.
    pub value: Cow<'a, str>,
}

/// A parsed field selector: its terms in apimachinery's order (sorted by raw term text).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector<'a> {
    terms: Vec<FieldRequirement<'a>>,
}

impl<'a> FieldSelector<'a> {
    /// Parses a field selector like `fields.ParseSelector`.
    ///
    /// ```
    /// use kubegate_routing::selectors::FieldSelector;
    /// let s = FieldSelector::parse("status.phase!=Running,metadata.name=web").unwrap();
    /// assert_eq!(s.requires_exact_match("metadata.name"), Some("web"));
    /// assert!(FieldSelector::parse("metadata.name=a,foo").is_err());
    /// ```
    pub fn parse(selector: &'a str) -> Result<Self, SelectorError> {
        let mut raw: Vec<&'a str> = split_terms(selector).collect();
        raw.sort_unstable();
        let mut terms = Vec::with_capacity(raw.len());
        for term in raw {
            if term.is_empty() {
                continue;
            }
            terms.push(parse_term(selector, term)?);
        }
        Ok(FieldSelector { terms })
    }

    /// The terms, in evaluation order.
    pub fn requirements(&self) -> &[FieldRequirement<'a>] {
        &self.terms
    }

    /// Whether the selector selects nothing (matches everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether an object whose fields `field` looks up matches every term, as apimachinery's
    /// `Selector.Matches(fields.Set)` decides: a field the object does not have reads as `""`.
    ///
    /// ```
    /// use kubegate_routing::selectors::FieldSelector;
    /// let fields = |f: &str| (f == "metadata.name").then_some("web");
    /// assert!(FieldSelector::parse("metadata.name=web").unwrap().matches(fields));
    /// assert!(FieldSelector::parse("metadata.namespace!=x").unwrap().matches(fields));
    /// assert!(!FieldSelector::parse("metadata.namespace=x").unwrap().matches(fields));
    /// ```
    pub fn matches<'f>(&self, field: impl Fn(&str) -> Option<&'f str>) -> bool {
        self.terms.iter().all(|t| {
            let got = field(t.field).unwrap_or("");
            match t.operator {
                FieldOperator::Equals | FieldOperator::DoubleEquals => got == t.value,
                FieldOperator::NotEquals => got != t.value,
            }
        })
    }

    /// The value `field` must equal (`=` or `==`), if the selector requires an exact match on it;
    /// the first such term wins, as in apimachinery's `RequiresExactMatch`.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator != FieldOperator::NotEquals)
            .map(|t| &*t.value)
    }
}

/// The value that `metadata.name` must equal, computed without allocating when the selector has
/// no escapes: the lexically smallest raw `metadata.name=`/`==` term, which is the one
/// apimachinery's sorted `RequiresExactMatch` finds. `Err` when the selector does not parse.
pub(crate) fn exact_name(selector: &str) -> Result<Option<Cow<'_, str>>, SelectorError> {
    if let Some((field, value)) = one_plain_equality_term(selector) {
        return Ok((field == "metadata.name").then_some(Cow::Borrowed(value)));
    }
    let mut best: Option<(&str, FieldOperator, &str)> = None;
    for term in split_terms(selector) {
        if term.is_empty() {
            continue;
        }
        let (field, op, value) = split_term(term).ok_or_else(|| invalid(selector, term))?;
        unescape_value(value)?;
        if field == "metadata.name"
            && op != FieldOperator::NotEquals
            && best.is_none_or(|(raw, _, _)| term < raw)
        {
            best = Some((term, op, value));
        }
    }
    best.map(|(_, _, value)| unescape_value(value)).transpose()
}

/// The field and value of a selector that is one `field=value` or `field==value` term with no
/// `\` or `,` anywhere, no `!` in the field and no `=` in the value (the usual shape): its own
/// raw and unescaped form, found with two eight-byte searches. `None` for any other selector,
/// valid or not.
fn one_plain_equality_term(selector: &str) -> Option<(&str, &str)> {
    let bytes = selector.as_bytes();
    let op = find_any(bytes, [b'=', b'!', b'\\', b','])?;
    if bytes[op] != b'=' {
        return None;
    }
    let value_start = if bytes.get(op + 1) == Some(&b'=') {
        op + 2
    } else {
        op + 1
    };
    // `op` and `value_start` follow ASCII `=`: char boundaries.
    let (field, value) = (selector.get(..op)?, selector.get(value_start..)?);
    match find_any(value.as_bytes(), [b'=', b'\\', b',']) {
        None => Some((field, value)),
        Some(_) => None,
    }
}

fn parse_term<'a>(selector: &str, term: &'a str) -> Result<FieldRequirement<'a>, SelectorError> {
    let (field, operator, value) = split_term(term).ok_or_else(|| invalid(selector, term))?;
    Ok(FieldRequirement {
        field,
        operator,
        value: unescape_value(value)?,
    })
}

fn invalid(selector: &str, term: &str) -> SelectorError {
    SelectorError::InvalidFieldTerm {
        selector: selector.to_owned(),
        term: term.to_owned(),
    }
}

/// Comma-separated terms; a backslash-escaped comma is data (the backslash is kept).
fn split_terms(selector: &str) -> impl Iterator<Item = &str> {
    // Bytes, not chars: `\\` and `,` are ASCII, and an escaped multi-byte character is skipped
    // byte by byte without ever matching either (UTF-8 continuation bytes are ≥ 0x80).
    let mut start = 0;
    let mut in_slash = false;
    let mut done = selector.is_empty();
    let mut bytes = selector.bytes().enumerate();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        for (i, b) in bytes.by_ref() {
            if in_slash {
                in_slash = false;
            } else if b == b'\\' {
                in_slash = true;
            } else if b == b',' {
                let term = selector.get(start..i).unwrap_or_default();
                start = i + 1;
                return Some(term);
            }
        }
        done = true;
        Some(selector.get(start..).unwrap_or_default())
    })
}

/// The first occurrence of `!=`, `==` or `=` (checked in that order at each position) splits a term.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    let bytes = term.as_bytes();
    // Only a `!` or `=` can start an operator; both are ASCII, so `i` is a char boundary.
    let mut from = 0;
    while let Some(found) = find_either(bytes.get(from..)?, b'!', b'=') {
        let i = from + found;
        let (op, len) = match (bytes[i], bytes.get(i + 1)) {
            (b'!', Some(b'=')) => (FieldOperator::NotEquals, 2),
            (b'=', Some(b'=')) => (FieldOperator::DoubleEquals, 2),
            (b'=', _) => (FieldOperator::Equals, 1),
            // A `!` not followed by `=` is part of the field.
            _ => {
                from = i + 1;
                continue;
            }
        };
        return Some((term.get(..i)?, op, term.get(i + len..)?));
    }
    None
}

fn unescape_value(s: &str) -> Result<Cow<'_, str>, SelectorError> {
    if !s.bytes().any(|b| matches!(b, b'\\' | b',' | b'=')) {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => return Err(SelectorError::InvalidEscape(format!("\\{other}"))),
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(SelectorError::UnescapedRune(c)),
            other => out.push(other),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidEscape("\\".to_owned()));
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_terms_sorted() {
        let s = FieldSelector::parse("b=2,a!=1,,c==3").unwrap();
        let fields: Vec<_> = s.requirements().iter().map(|t| t.field).collect();
        assert_eq!(fields, ["a", "b", "c"]);
        assert_eq!(s.requirements()[0].operator, FieldOperator::NotEquals);
        assert_eq!(s.requirements()[2].operator, FieldOperator::DoubleEquals);
    }

    #[test]
    fn exact_name_agrees_with_the_parsed_selector() {
        for s in [
            "",
            "metadata.name=web",
            "metadata.name==web",
            "metadata.name!=web",
            "metadata.name=",
            "metadata.name=a=b",
            "metadata.name",
            "=web",
            "spec.nodeName=n1",
            "metadata.name=b,metadata.name=a",
            "metadata.name==b,metadata.name=a",
            "metadata.name=a\\,b",
            "metadata.name=a\\=b",
            "metadata.name=a\\x",
            "metadata.name=a,",
            ",metadata.name=a",
            "metadata.name=ᛒ",
        ] {
            let parsed = FieldSelector::parse(s);
            let exact = exact_name(s);
            assert_eq!(parsed.is_ok(), exact.is_ok(), "{s:?}");
            if let (Ok(parsed), Ok(exact)) = (parsed, exact) {
                assert_eq!(
                    parsed.requires_exact_match("metadata.name"),
                    exact.as_deref(),
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn escapes() {
        let s = FieldSelector::parse(r"a=x\,y\=z\\w").unwrap();
        assert_eq!(s.requirements()[0].value, r"x,y=z\w");
        assert!(matches!(
            FieldSelector::parse(r"a=x\y"),
            Err(SelectorError::InvalidEscape(_))
        ));
        assert!(matches!(
            FieldSelector::parse(r"a=x\"),
            Err(SelectorError::InvalidEscape(_))
        ));
        assert!(matches!(
            FieldSelector::parse("a=b=c"),
            Err(SelectorError::UnescapedRune('='))
        ));
    }

    #[test]
    fn errors_name_the_term() {
        let e = FieldSelector::parse("metadata.name=name1,foo").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid selector: 'metadata.name=name1,foo'; can't understand 'foo'"
        );
    }

    #[test]
    fn exact_name_agrees_with_sorted_parse() {
        for sel in [
            "metadata.name=b,metadata.name=a",
            "metadata.name==z,metadata.name=y",
            "metadata.name!=a,metadata.name=b",
            "x=1",
            "",
            r"metadata.name=a\,b",
        ] {
            let parsed = FieldSelector::parse(sel).unwrap();
            assert_eq!(
                exact_name(sel).unwrap().as_deref(),
                parsed.requires_exact_match("metadata.name"),
                "{sel}"
            );
        }
    }

    proptest::proptest! {
        /// `exact_name`, fast path included, agrees with the parsed selector on whether it
        /// parses and on the name it pins.
        #[test]
        fn exact_name_agrees_with_the_parser(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "metadata.name", "metadata.name=", "spec.nodeName", "a", "web-1", "=", "==",
                    "!=", "!", ",", "\\", "\\,", "\\=", "\\\\", "ᛒ", "x=y",
                ]),
                0..8,
            ),
        ) {
            let selector = pieces.concat();
            let parsed = FieldSelector::parse(&selector);
            let exact = exact_name(&selector);
            proptest::prop_assert_eq!(parsed.is_ok(), exact.is_ok(), "{:?}", selector);
            if let (Ok(parsed), Ok(exact)) = (parsed, exact) {
                proptest::prop_assert_eq!(
                    parsed.requires_exact_match("metadata.name"),
                    exact.as_deref(),
                    "{:?}",
                    selector
                );
            }
        }
    }

    #[test]
    fn empty_is_empty() {
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse(",").unwrap().is_empty());
    }
}
