//! What passes between a host and [`Engine::http`] / [`Engine::http_finish`]: the request
//! ([`HttpRequest`]), the verdict ([`HttpVerdict`]) and the exchange to finish, and what the HTTP
//! layer counts as it reads requests. The entry points themselves are the engine's (in
//! `engine/http.rs`), so that this module does not depend on the engine.
//!
//! [`Engine::http`]: crate::Engine::http
//! [`Engine::http_finish`]: crate::Engine::http_finish

mod request;
mod verdict;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Timestamp;

pub use request::{Caller, HttpRequest, HttpStage};
pub(crate) use verdict::Pending;
pub use verdict::{Admission, Exchange, HttpVerdict, Refusal};

/// What the HTTP layer counts as it reads requests: forwarding headers that arrived while no
/// proxy is trusted.
#[derive(Debug, Default)]
pub(crate) struct HttpState {
    untrusted_forwarded: AtomicU64,
    first_untrusted_ms: AtomicU64,
}

impl HttpState {
    pub(crate) fn note_untrusted(&self, now: Timestamp) {
        if self.untrusted_forwarded.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first_untrusted_ms
                .store(now.as_millis(), Ordering::Relaxed);
        }
    }

    /// How many requests carried a forwarding header while no proxy is trusted, and when the
    /// first did (ms).
    pub(crate) fn untrusted_forwarded(&self) -> (u64, u64) {
        (
            self.untrusted_forwarded.load(Ordering::Relaxed),
            self.first_untrusted_ms.load(Ordering::Relaxed),
        )
    }
}
