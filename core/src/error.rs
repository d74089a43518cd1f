//! The one error type of the core crate.
//!
//! [`Error`] is opaque; what a caller branches on is its [`ErrorKind`], whose snake_case name
//! ([`ErrorKind::as_str`]) is the same in Rust, C, Python and Node. The enum is
//! `#[non_exhaustive]`: a binding that maps kinds to its own codes matches every kind with no
//! catch-all arm, so a new kind forces a decision there.

use std::fmt;

/// What went wrong, as a stable, enumerable kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration could not be read or is invalid; [`Error::field`] names the field.
    InvalidConfig,
    /// The request's cost is larger than a matching layer's limit (or bucket capacity): it can
    /// never be admitted, however long the caller waits. Nothing was consumed.
    CostExceedsLimit,
}

impl ErrorKind {
    /// The kind's stable snake_case name, shared by every binding.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::CostExceedsLimit => "cost_exceeds_limit",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from floodwall: a [`kind`](Error::kind), a message a person can act on, and for
/// configuration errors the path of the offending field (`rules[2].window`).
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    field: Option<String>,
    message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            field: None,
            message: message.into(),
        }
    }

    /// A configuration error about `field` (a path such as `rules[0].window`, or empty for the
    /// document as a whole).
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        Error {
            kind: ErrorKind::InvalidConfig,
            field: (!field.is_empty()).then_some(field),
            message: message.into(),
        }
    }

    /// The same error, its message naming the configuration file it came from.
    pub(crate) fn in_file(mut self, path: &std::path::Path) -> Self {
        self.message = format!("{} (in {})", self.message, path.display());
        self
    }

    /// The kind of error, to branch on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// For configuration errors, the path of the field at fault, e.g. `rules[1].refill_rate`.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The message without the field path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}: {self})", self.kind)
    }
}

impl std::error::Error for Error {}
