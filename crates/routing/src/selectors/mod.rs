//! Field and label selector parsers faithful to apimachinery's grammars
//! (`pkg/fields/selector.go`, `pkg/labels/selector.go`).
//!
//! kube-apiserver parses both selectors while computing RequestInfo: a selector that fails to
//! parse changes the outcome (no `metadata.name` is derived), and authorizers may receive the
//! parsed requirements. Parsing borrows from the input wherever no unescaping is needed.

mod fields;
mod labels;

pub(crate) use fields::exact_name;
pub use fields::{FieldOperator, FieldRequirement, FieldSelector};
pub use labels::{LabelOperator, LabelRequirement, LabelSelector};

/// Why a selector did not parse. Messages follow apimachinery's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A field selector term without a recognised operator.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    InvalidFieldTerm {
        /// The whole selector.
        selector: String,
        /// The term that did not parse.
        term: String,
    },
    /// A backslash escape other than `\\`, `\,`, `\=` in a field selector value.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// An unescaped `,` or `=` inside a field selector value.
    #[error("invalid field selector: unescaped character {0:?}")]
    UnescapedRune(char),
    /// A label selector that does not follow the grammar or fails validation.
    #[error("unable to parse requirement: {0}")]
    Label(String),
}
