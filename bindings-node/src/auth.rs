//! `Identity`: who a verified token says the caller is.

use std::sync::Arc;

use napi_derive::napi;

/// The caller a verified token names.
#[napi]
pub struct Identity {
    inner: Arc<floodwall::Identity>,
}

impl Identity {
    pub(crate) fn new(inner: Arc<floodwall::Identity>) -> Self {
        Identity { inner }
    }
}

#[napi]
impl Identity {
    /// The subject (by default the `sub` claim).
    #[napi(getter)]
    pub fn subject(&self) -> String {
        self.inner.subject.clone()
    }

    /// The role from the configured claim or the default role; `null` when neither.
    #[napi(getter)]
    pub fn role(&self) -> Option<String> {
        self.inner.role.clone()
    }

    /// The `kid` of the key that verified the token.
    #[napi(getter)]
    pub fn key_id(&self) -> Option<String> {
        self.inner.key_id.clone()
    }

    /// The algorithm the token was verified with.
    #[napi(getter)]
    pub fn algorithm(&self) -> &'static str {
        self.inner.algorithm
    }

    /// `exp` in milliseconds since the Unix epoch; `null` when the token has none.
    #[napi(getter)]
    pub fn expires_at_ms(&self) -> Option<f64> {
        self.inner.expires_at.map(|t| t.as_millis() as f64)
    }

    /// The token's claims as JSON text (`index.js` parses it when `claims` is read).
    #[napi]
    pub fn claims_json(&self) -> String {
        serde_json::Value::Object(self.inner.claims.clone()).to_string()
    }
}
