//! Go's string formatting, as kube-apiserver's messages use it.

use std::fmt::Write as _;

/// Append `s` quoted the way Go's `strconv.Quote` (`%q`) quotes it.
///
/// Go keeps every rune `unicode.IsPrint` accepts; this approximates IsPrint as "not a control
/// character, not a space other than U+0020, not a common format character", which agrees
/// with Go for every name Kubernetes accepts.
pub(crate) fn push_go_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c,
            '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{180e}'
            | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
            | '\u{e000}'..='\u{f8ff}' | '\u{f0000}'..='\u{10ffff}'))
}

/// `s` quoted as Go's `%q` does.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_go_quoted(&mut out, s);
    out
}

/// kube-apiserver's HTML sanitiser for messages: `&`, `<`, `>` become entities.
pub(crate) fn html_sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Append `s` as a JSON string the way Go's `encoding/json` writes it (HTML-safe:
/// `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u00XX`/`\u20XX`).
pub(crate) fn push_go_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `utilerrors.NewAggregate(errs).Error()`: one message as is; several distinct ones
/// as `[a, b]` (duplicates dropped, first occurrence kept).
pub(crate) fn aggregate<'a>(messages: impl IntoIterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for message in messages {
        if !seen.contains(&message) {
            seen.push(message);
        }
    }
    match seen.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_strconv_quote() {
        for (input, expected) in [
            ("NAME", r#""NAME""#),
            ("a\"b", r#""a\"b""#),
            ("a\\b", r#""a\\b""#),
            ("tab\there", r#""tab\there""#),
            ("\u{1}", r#""\x01""#),
            ("\u{7f}", r#""\x7f""#),
            ("ᛒᚥ とロ", "\"ᛒᚥ とロ\""),
            ("nb\u{a0}sp", r#""nb\u00a0sp""#),
            ("zw\u{200b}", r#""zw\u200b""#),
        ] {
            assert_eq!(go_quote(input), expected, "{input:?}");
        }
    }

    #[test]
    fn aggregate_formats_like_go() {
        assert_eq!(aggregate([]), "");
        assert_eq!(aggregate(["a"]), "a");
        assert_eq!(aggregate(["a", "a"]), "a");
        assert_eq!(aggregate(["a", "b", "a"]), "[a, b]");
    }

    #[test]
    fn json_escapes_like_go() {
        let mut out = String::new();
        push_go_json_string(&mut out, "<a&b>\"\u{1}\u{2028}");
        assert_eq!(out, r#""\u003ca\u0026b\u003e\"\u0001\u2028""#);
    }
}
