//! Core errors as Node-API errors the JS layer turns into `FloodwallError`s.
//!
//! The native error's message is a JSON object — `code` (the kind's stable name), `message`,
//! `status` and, where the core has them, `field`, `wwwAuthenticate` and `availableAtMs` —
//! which `index.js` reads back; no native call reaches a user without that conversion.

use floodwall::Error;
use napi::Status;

/// A core error as a Node-API error carrying its details.
pub(crate) fn to_napi(error: &Error) -> napi::Error {
    let details = serde_json::json!({
        "floodwall": true,
        "code": error.kind().as_str(),
        "message": error.to_string(),
        "status": error.http_status(),
        "field": error.field(),
        "wwwAuthenticate": error.www_authenticate(),
        "availableAtMs": error.available_at().map(|t| t.as_millis()),
    });
    napi::Error::new(Status::GenericFailure, details.to_string())
}

/// `Result<T, floodwall::Error>` → `napi::Result<T>`.
pub(crate) trait IntoNapi<T> {
    fn js(self) -> napi::Result<T>;
}

impl<T> IntoNapi<T> for Result<T, Error> {
    fn js(self) -> napi::Result<T> {
        self.map_err(|e| to_napi(&e))
    }
}

/// An argument the addon cannot use (a wrong type or value), named.
pub(crate) fn invalid_arg(message: impl Into<String>) -> napi::Error {
    napi::Error::new(Status::InvalidArg, message.into())
}
