//! The [`Identity`] a verified token yields: subject, role, claims, key and algorithm.

use serde_json::{Map, Value};

use super::claims::lookup;
use crate::clock::Timestamp;

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Identity {
    /// The subject (`sub`, or the configured `subject_claim`).
    pub subject: String,
    /// The role, as the rules name it (after `role_map`, or the `default_role`).
    pub role: Option<String>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
    /// The `kid` of the key that verified the token, if it has one.
    pub key_id: Option<String>,
    /// The algorithm the token was signed with (`RS256` …).
    pub algorithm: &'static str,
    /// When the token expires (`exp`), if it says.
    pub expires_at: Option<Timestamp>,
}

impl Identity {
    /// The claim at `path`: a top-level claim of that exact name, or else a dotted path into
    /// nested objects (`realm_access.roles`).
    pub fn claim(&self, path: &str) -> Option<&Value> {
        lookup(&self.claims, path)
    }
}
