//! The routing error type.

use crate::router::NameKind;

/// Why a request path could not be routed. [`RouteError::status_code`] gives the HTTP status the
/// gateway answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No target is served under this path.
    #[error("the server could not find the requested resource")]
    NotFound,
    /// A name in the prefix is not a valid RFC 1123 label (lowercase alphanumerics and `-`,
    /// at most 63 characters), so nothing by that name can exist.
    #[error("invalid {kind} name in the request path")]
    InvalidName {
        /// Which name was invalid.
        kind: NameKind,
    },
    /// The path does not start with `/`.
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("invalid URL escape in the request path")]
    InvalidEscape,
    /// Escapes that decode to bytes that are not UTF-8.
    #[error("the request path is not valid UTF-8 after decoding")]
    InvalidUtf8,
    /// A raw or escaped control character or NUL.
    #[error("control characters are not allowed in the request path")]
    ControlCharacter,
    /// A raw or escaped backslash.
    #[error("backslashes are not allowed in the request path")]
    Backslash,
    /// `%2F`: an escaped slash would split segments differently at the gateway and the upstream.
    #[error("encoded slashes are not allowed in the request path")]
    EncodedSlash,
    /// `//`: an empty path segment.
    #[error("empty path segments are not allowed in the request path")]
    EmptySegment,
    /// A `.` or `..` segment (raw or escaped).
    #[error("dot segments are not allowed in the request path")]
    DotSegment,
}

impl RouteError {
    /// The HTTP status for this error: 404 when nothing can live at the path, 400 when the path
    /// itself is malformed.
    pub fn status_code(&self) -> u16 {
        match self {
            RouteError::NotFound | RouteError::InvalidName { .. } => 404,
            _ => 400,
        }
    }
}
