//! Label selectors: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k>1`, `k<1`.

use super::SelectorError;

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOperator {
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value`
    NotEquals,
    /// `key in (…)`
    In,
    /// `key notin (…)`
    NotIn,
    /// `key>n`
    GreaterThan,
    /// `key<n`
    LessThan,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement<'a> {
    /// The label key (a qualified name).
    pub key: &'a str,
    /// The operator.
    pub operator: LabelOperator,
    /// The values, sorted and de-duplicated (empty for `Exists`/`DoesNotExist`).
    pub values: Vec<&'a str>,
}

/// A parsed label selector: requirements sorted by key, as apimachinery's `labels.Parse` returns them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector<'a> {
    requirements: Vec<LabelRequirement<'a>>,
}

impl<'a> LabelSelector<'a> {
    /// Parses a label selector like `labels.Parse`.
    ///
    /// ```
    /// use kubegate_routing::selectors::{LabelOperator, LabelSelector};
    /// let s = LabelSelector::parse("env in (prod, dev),!canary").unwrap();
    /// assert_eq!(s.requirements()[0].key, "canary");
    /// assert_eq!(s.requirements()[0].operator, LabelOperator::DoesNotExist);
    /// assert_eq!(s.requirements()[1].values, ["dev", "prod"]);
    /// assert!(LabelSelector::parse("a=b c").is_err());
    /// ```
    pub fn parse(selector: &'a str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            lexer: Lexer { input: selector },
            peeked: None,
            collect: true,
        };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether `selector` parses, without building it (and, for `key`, `!key`, `key=value`,
    /// `key!=value`, `key>n` terms, without allocating): what kube-apiserver's ListOptions
    /// decoding needs to know.
    ///
    /// ```
    /// use kubegate_routing::selectors::LabelSelector;
    /// assert!(LabelSelector::validate("app=web,tier!=db").is_ok());
    /// assert!(LabelSelector::validate("a=b c").is_err());
    /// ```
    pub fn validate(selector: &str) -> Result<(), SelectorError> {
        if equality_terms_are_valid(selector) {
            return Ok(());
        }
        let mut parser = Parser {
            lexer: Lexer { input: selector },
            peeked: None,
            collect: false,
        };
        parser.parse().map(drop)
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[LabelRequirement<'a>] {
        &self.requirements
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object whose labels `label` looks up matches every requirement, as
    /// apimachinery's `Requirement.Matches` decides: `in`, `=`, `==` need the label with one
    /// of the values; `notin`, `!=` match an object without it; `>`/`<` compare integers and
    /// fail on a value that is not one.
    ///
    /// ```
    /// use kubegate_routing::selectors::LabelSelector;
    /// let labels = |key: &str| (key == "env").then_some("prod");
    /// assert!(LabelSelector::parse("env=prod,tier!=db").unwrap().matches(labels));
    /// assert!(!LabelSelector::parse("env in (dev)").unwrap().matches(labels));
    /// assert!(!LabelSelector::parse("env>1").unwrap().matches(labels));
    /// ```
    pub fn matches<'l>(&self, label: impl Fn(&str) -> Option<&'l str>) -> bool {
        self.requirements.iter().all(|r| r.matches(label(r.key)))
    }
}

impl LabelRequirement<'_> {
    /// Whether a label value (`None`: no such label) meets the requirement.
    pub fn matches(&self, value: Option<&str>) -> bool {
        use LabelOperator::*;
        let has = |v: &str| self.values.contains(&v);
        match (self.operator, value) {
            (In | Equals | DoubleEquals, Some(v)) => has(v),
            (In | Equals | DoubleEquals, None) => false,
            (NotIn | NotEquals, Some(v)) => !has(v),
            (NotIn | NotEquals, None) => true,
            (Exists, got) => got.is_some(),
            (DoesNotExist, got) => got.is_none(),
            (GreaterThan | LessThan, Some(v)) => {
                let (Ok(got), [wanted]) = (v.parse::<i64>(), self.values.as_slice()) else {
                    return false;
                };
                let Ok(wanted) = wanted.parse::<i64>() else {
                    return false;
                };
                if self.operator == GreaterThan {
                    got > wanted
                } else {
                    got < wanted
                }
            }
            (GreaterThan | LessThan, None) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    End,
    Identifier(&'a str),
    In,
    NotIn,
    Comma,
    OpenParen,
    CloseParen,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
}

impl Token<'_> {
    fn literal(&self) -> &str {
        match self {
            Token::End => "",
            Token::Identifier(s) => s,
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Comma => ",",
            Token::OpenParen => "(",
            Token::CloseParen => ")",
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
        }
    }

    /// In value position apimachinery reads the keywords `in`/`notin` as plain identifiers.
    fn as_value(self) -> Self {
        match self {
            Token::In => Token::Identifier("in"),
            Token::NotIn => Token::Identifier("notin"),
            other => other,
        }
    }
}

struct Lexer<'a> {
    input: &'a str,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

impl<'a> Lexer<'a> {
    fn next(&mut self) -> Token<'a> {
        let trimmed = self
            .input
            .trim_start_matches(|c: char| c.is_ascii() && is_whitespace(c as u8));
        self.input = trimmed;
        let bytes = trimmed.as_bytes();
        // apimachinery's lexer reads a NUL byte as the end of input.
        let Some(&first) = bytes.first().filter(|b| **b != 0) else {
            self.input = "";
            return Token::End;
        };
        if is_special(first) {
            let two = bytes.get(1).copied();
            let (token, len) = match (first, two) {
                (b'!', Some(b'=')) => (Token::NotEquals, 2),
                (b'=', Some(b'=')) => (Token::DoubleEquals, 2),
                (b'!', _) => (Token::Bang, 1),
                (b'=', _) => (Token::Equals, 1),
                (b'(', _) => (Token::OpenParen, 1),
                (b')', _) => (Token::CloseParen, 1),
                (b',', _) => (Token::Comma, 1),
                (b'>', _) => (Token::GreaterThan, 1),
                _ => (Token::LessThan, 1),
            };
            self.input = &trimmed[len..];
            return token;
        }
        let end = bytes
            .iter()
            .position(|&b| b == 0 || is_whitespace(b) || is_special(b))
            .unwrap_or(bytes.len());
        let word = &trimmed[..end];
        self.input = &trimmed[end..];
        match word {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier(word),
        }
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
    /// Whether requirements are kept (`false`: only checked).
    collect: bool,
}

fn err(msg: String) -> SelectorError {
    SelectorError::Label(msg)
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Token<'a> {
        match self.peeked {
            Some(t) => t,
            None => {
                let t = self.lexer.next();
                self.peeked = Some(t);
                t
            }
        }
    }

    fn consume(&mut self) -> Token<'a> {
        self.peeked.take().unwrap_or_else(|| self.lexer.next())
    }

    fn parse(&mut self) -> Result<Vec<LabelRequirement<'a>>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            match self.peek().as_value() {
                Token::Identifier(_) | Token::Bang => {
                    let requirement = self.requirement()?;
                    if self.collect {
                        requirements.push(requirement);
                    }
                    match self.consume() {
                        Token::End => return Ok(requirements),
                        Token::Comma => match self.peek().as_value() {
                            Token::Identifier(_) | Token::Bang => {}
                            t => {
                                return Err(err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                )));
                            }
                        },
                        t => {
                            return Err(err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            )));
                        }
                    }
                }
                Token::End => return Ok(requirements),
                t => {
                    return Err(err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    )));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<LabelRequirement<'a>, SelectorError> {
        let mut negated = false;
        let mut token = self.consume().as_value();
        if token == Token::Bang {
            negated = true;
            token = self.consume().as_value();
        }
        let Token::Identifier(key) = token else {
            return Err(err(format!(
                "found '{}', expected: identifier",
                token.literal()
            )));
        };
        validate_key(key)?;
        let at_end = matches!(self.peek().as_value(), Token::End | Token::Comma);
        if negated || at_end {
            let operator = if negated {
                LabelOperator::DoesNotExist
            } else {
                LabelOperator::Exists
            };
            return Ok(LabelRequirement {
                key,
                operator,
                values: Vec::new(),
            });
        }
        let operator = match self.consume() {
            Token::In => LabelOperator::In,
            Token::NotIn => LabelOperator::NotIn,
            Token::Equals => LabelOperator::Equals,
            Token::DoubleEquals => LabelOperator::DoubleEquals,
            Token::NotEquals => LabelOperator::NotEquals,
            Token::GreaterThan => LabelOperator::GreaterThan,
            Token::LessThan => LabelOperator::LessThan,
            t => {
                return Err(err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.literal()
                )));
            }
        };
        if !matches!(operator, LabelOperator::In | LabelOperator::NotIn) {
            // One value: nothing to sort or de-duplicate, and nothing to allocate when only
            // checking.
            let value = self.exact_value()?;
            check_values(operator, &[value])?;
            let values = if self.collect {
                vec![value]
            } else {
                Vec::new()
            };
            return Ok(LabelRequirement {
                key,
                operator,
                values,
            });
        }
        let mut values = self.set_values()?;
        values.sort_unstable();
        values.dedup();
        check_values(operator, &values)?;
        Ok(LabelRequirement {
            key,
            operator,
            values,
        })
    }

    fn exact_value(&mut self) -> Result<&'a str, SelectorError> {
        match self.peek().as_value() {
            Token::End | Token::Comma => Ok(""),
            Token::Identifier(v) => {
                self.consume();
                Ok(v)
            }
            t => Err(err(format!(
                "found '{}', expected: identifier",
                t.literal()
            ))),
        }
    }

    fn set_values(&mut self) -> Result<Vec<&'a str>, SelectorError> {
        let open = self.consume().as_value();
        if open != Token::OpenParen {
            return Err(err(format!("found '{}' expected: '('", open.literal())));
        }
        match self.peek().as_value() {
            Token::Identifier(_) | Token::Comma => {
                let values = self.identifiers()?;
                let close = self.consume().as_value();
                if close != Token::CloseParen {
                    return Err(err(format!("found '{}', expected: ')'", close.literal())));
                }
                Ok(values)
            }
            Token::CloseParen => {
                self.consume();
                Ok(vec![""])
            }
            t => Err(err(format!(
                "found '{}', expected: ',', ')' or identifier",
                t.literal()
            ))),
        }
    }

    fn identifiers(&mut self) -> Result<Vec<&'a str>, SelectorError> {
        let mut values = Vec::new();
        loop {
            match self.consume().as_value() {
                Token::Identifier(v) => {
                    values.push(v);
                    match self.peek().as_value() {
                        Token::Comma => continue,
                        Token::CloseParen => return Ok(values),
                        t => {
                            return Err(err(format!(
                                "found '{}', expected: ',' or ')'",
                                t.literal()
                            )));
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push("");
                    }
                    match self.peek().as_value() {
                        Token::CloseParen => {
                            values.push("");
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.consume();
                            values.push("");
                        }
                        _ => {}
                    }
                }
                t => {
                    return Err(err(format!(
                        "found '{}', expected: ',', or identifier",
                        t.literal()
                    )));
                }
            }
        }
    }
}

/// Whether `selector` is made only of `key=value`, `key==value` or `key!=value` terms joined by
/// `,` — no spaces, no other operator — each with a valid key and value: the shape almost every
/// real selector has. For those the grammar needs no lexer: a term is its key, operator and
/// value. `false` means "not shown valid this way" (another shape, or an invalid term); the
/// full parser then decides, and words the error.
fn equality_terms_are_valid(selector: &str) -> bool {
    let mut terms = selector;
    loop {
        match first_equality_term_is_valid(terms) {
            None => return false,
            Some(None) => return true,
            Some(Some(after_comma)) => terms = after_comma,
        }
    }
}

/// Checks the first `key=value`, `key==value` or `key!=value` term of `terms` for
/// [`equality_terms_are_valid`]: `None` if it is not shown valid, else what follows its `,`
/// (`None` when it is the last term).
fn first_equality_term_is_valid(terms: &str) -> Option<Option<&str>> {
    // The usual key has no prefix: it ends at the first byte a name part cannot hold, which
    // must start the operator; the value ends the same way, at the `,` or the end. So the term
    // is checked in one pass by table, without first searching for its end.
    let bytes = terms.as_bytes();
    let (key, after_key) = bytes.split_at(name_part_prefix_len(bytes));
    let after_op = match after_key {
        [b'=' | b'!', b'=', after_op @ ..] | [b'=', after_op @ ..] => after_op,
        // A prefixed key (`example.com/name`), or not an equality term.
        _ => return first_prefixed_equality_term_is_valid(terms),
    };
    let (value, after_value) = after_op.split_at(name_part_prefix_len(after_op));
    // Both are made of name bytes already: only their lengths and ends are left to check.
    let value_is_valid = value.is_empty() || is_name_part_of_name_bytes(value);
    if !(is_name_part_of_name_bytes(key) && value_is_valid) {
        return None;
    }
    match after_value {
        [] => Some(None),
        // Past an ASCII `,`: a char boundary.
        [b',', after_comma @ ..] => Some(Some(terms.get(terms.len() - after_comma.len()..)?)),
        // Whitespace or another special byte: the full parser decides.
        _ => None,
    }
}

/// [`first_equality_term_is_valid`] for a term whose key has a prefix (or that is not an
/// equality term at all): the term is split off at its `,` first.
fn first_prefixed_equality_term_is_valid(terms: &str) -> Option<Option<&str>> {
    let (term, after_comma) = match crate::path::split_at_byte(terms, b',') {
        Some((term, after_comma)) => (term, Some(after_comma)),
        None => (terms, None),
    };
    prefixed_equality_term_is_valid(term).then_some(after_comma)
}

/// Whether `term`, whose key has a prefix (or that is not an equality term at all), is a valid
/// equality term.
fn prefixed_equality_term_is_valid(term: &str) -> bool {
    let Some(op) = crate::path::find_either(term.as_bytes(), b'=', b'!') else {
        return false;
    };
    let value_start = match (term.as_bytes()[op], term.as_bytes().get(op + 1)) {
        (b'=' | b'!', Some(b'=')) => op + 2,
        (b'=', _) => op + 1,
        _ => return false,
    };
    let (key, value) = (&term[..op], &term[value_start..]);
    validate_key(key).is_ok() && validate_value(value).is_ok()
}

/// The values of a requirement: one integer for `>`/`<`, label values otherwise.
fn check_values(operator: LabelOperator, values: &[&str]) -> Result<(), SelectorError> {
    match operator {
        LabelOperator::GreaterThan | LabelOperator::LessThan => {
            if values.len() != 1 || values[0].parse::<i64>().is_err() {
                return Err(err(format!(
                    "key: Invalid value: {values:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                )));
            }
        }
        _ => {
            for v in values {
                validate_value(v)?;
            }
        }
    }
    Ok(())
}

/// `IsQualifiedName`: an optional DNS-1123 subdomain prefix and `/`, then a name of at most 63
/// characters of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match crate::path::split_at_byte(key, b'/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(is_dns1123_subdomain);
    // `is_qualified_name_part` refuses a second `/`.
    if prefix_ok && is_qualified_name_part(name.as_bytes()) {
        Ok(())
    } else {
        Err(err(format!(
            "key: Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )))
    }
}

/// `IsValidLabelValue`: empty, or at most 63 characters shaped like a qualified name part.
fn validate_value(value: &str) -> Result<(), SelectorError> {
    if is_label_value(value.as_bytes()) {
        Ok(())
    } else {
        Err(err(format!(
            "values[0][key]: Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )))
    }
}

/// `IsValidLabelValue`'s rule: empty, or a qualified name part.
fn is_label_value(value: &[u8]) -> bool {
    value.is_empty() || is_qualified_name_part(value)
}

/// `[A-Za-z0-9_.-]`, 1–63 bytes, alphanumeric at both ends.
fn is_qualified_name_part(bytes: &[u8]) -> bool {
    name_part_prefix_len(bytes) == bytes.len() && is_name_part_of_name_bytes(bytes)
}

/// How many bytes at the start of `bytes` a qualified name part may hold (`[A-Za-z0-9_.-]`).
fn name_part_prefix_len(bytes: &[u8]) -> usize {
    use crate::path::ANYWHERE;
    bytes
        .iter()
        .position(|&c| NAME_CLASS[usize::from(c)] & ANYWHERE == 0)
        .unwrap_or(bytes.len())
}

/// [`is_qualified_name_part`] for bytes already known to be `[A-Za-z0-9_.-]`
/// ([`name_part_prefix_len`]): only the length and the ends are left to check.
fn is_name_part_of_name_bytes(bytes: &[u8]) -> bool {
    use crate::path::AT_THE_ENDS;
    let at_the_ends = |c: &u8| NAME_CLASS[usize::from(*c)] & AT_THE_ENDS != 0;
    bytes.len() <= 63
        && bytes.first().is_some_and(at_the_ends)
        && bytes.last().is_some_and(at_the_ends)
}

/// Byte classes of qualified name parts and label values: `[A-Za-z0-9_.-]`, alphanumeric at
/// both ends.
const NAME_CLASS: [u8; 256] = crate::path::name_class_table(true, b"-_.");

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(crate::path::is_dns1123_label_any_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_table_matches_the_character_rules() {
        let reference = |s: &[u8]| {
            let alnum = |c: u8| c.is_ascii_alphanumeric();
            !s.is_empty()
                && s.len() <= 63
                && alnum(s[0])
                && alnum(s[s.len() - 1])
                && s.iter()
                    .all(|&c| alnum(c) || matches!(c, b'-' | b'_' | b'.'))
        };
        for a in 0..=255u8 {
            for s in [vec![a], vec![b'x', a, b'Y'], vec![a, b'0'], vec![b'Z', a]] {
                let text = String::from_utf8_lossy(&s).into_owned();
                assert_eq!(
                    is_qualified_name_part(text.as_bytes()),
                    reference(text.as_bytes()),
                    "{s:?}"
                );
            }
        }
        assert!(is_qualified_name_part("a".repeat(63).as_bytes()));
        assert!(!is_qualified_name_part("a".repeat(64).as_bytes()));
    }

    fn ok(s: &str) -> Vec<(String, LabelOperator, Vec<String>)> {
        LabelSelector::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .requirements()
            .iter()
            .map(|r| {
                (
                    r.key.to_owned(),
                    r.operator,
                    r.values.iter().map(|v| v.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn valid_selectors() {
        use LabelOperator::*;
        assert_eq!(ok(""), vec![]);
        assert_eq!(ok("x=a"), vec![("x".into(), Equals, vec!["a".into()])]);
        assert_eq!(
            ok("x==a"),
            vec![("x".into(), DoubleEquals, vec!["a".into()])]
        );
        assert_eq!(ok("x!=a"), vec![("x".into(), NotEquals, vec!["a".into()])]);
        assert_eq!(ok("x="), vec![("x".into(), Equals, vec!["".into()])]);
        assert_eq!(ok("x"), vec![("x".into(), Exists, vec![])]);
        assert_eq!(ok("!x"), vec![("x".into(), DoesNotExist, vec![])]);
        assert_eq!(
            ok(" x , y "),
            vec![("x".into(), Exists, vec![]), ("y".into(), Exists, vec![])]
        );
        assert_eq!(ok("x>1"), vec![("x".into(), GreaterThan, vec!["1".into()])]);
        assert_eq!(ok("x<-1"), vec![("x".into(), LessThan, vec!["-1".into()])]);
        assert_eq!(
            ok("x in (b,a,a)"),
            vec![("x".into(), In, vec!["a".into(), "b".into()])]
        );
        assert_eq!(ok("x notin ()"), vec![("x".into(), NotIn, vec!["".into()])]);
        assert_eq!(
            ok("x in (,a)"),
            vec![("x".into(), In, vec!["".into(), "a".into()])]
        );
        assert_eq!(
            ok("x in (a,)"),
            vec![("x".into(), In, vec!["".into(), "a".into()])]
        );
        assert_eq!(ok("x=in"), vec![("x".into(), Equals, vec!["in".into()])]);
        assert_eq!(
            ok("example.com/app=web"),
            vec![("example.com/app".into(), Equals, vec!["web".into()])]
        );
        assert_eq!(
            ok("z,a"),
            vec![("a".into(), Exists, vec![]), ("z".into(), Exists, vec![])]
        );
    }

    #[test]
    fn invalid_selectors() {
        for s in [
            "x=a b",
            "x=a||y=b",
            "x==a==b",
            "!x=a",
            "x>a",
            "x in a",
            "x in (a",
            "x in (a b)",
            ",",
            "x,",
            "=a",
            "x=,",
            "-x=a",
            "x=-a",
            "a/b/c=d",
            "Example.com/a=b",
            "x in (a,(b)",
            "x=a,",
            "x!",
            "!",
        ] {
            assert!(LabelSelector::parse(s).is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn trailing_comma_is_an_error_but_empty_exact_value_is_not() {
        assert!(LabelSelector::parse("x=,y").is_ok());
    }
}
