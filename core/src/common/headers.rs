//! The `[headers]` section: which sets of response headers a decision renders.

use serde::Deserialize;

/// The `[headers]` section: which sets of response headers a decision renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// The IETF draft's `RateLimit-Policy` and `RateLimit` fields.
    #[serde(default = "yes")]
    pub ietf: bool,
    /// The widely used `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
    #[serde(default = "yes")]
    pub legacy: bool,
    /// `Retry-After` on denial.
    #[serde(default = "yes")]
    pub retry_after: bool,
}

fn yes() -> bool {
    true
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            ietf: true,
            legacy: true,
            retry_after: true,
        }
    }
}
