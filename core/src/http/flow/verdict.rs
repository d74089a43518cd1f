//! What the HTTP layer says of a request ([`HttpVerdict`], [`Admission`], [`Refusal`]) and
//! the [`Exchange`] a host finishes once the response is.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::StoreUsed;
use crate::auth::Identity;
use crate::clock::Timestamp;
use crate::decision::Decision;
use crate::http::Response;

/// What the HTTP layer says of a request.
#[derive(Debug)]
pub enum HttpVerdict<'e> {
    /// Not the HTTP layer's to judge (a skipped path): hand it on untouched; there is nothing
    /// to finish.
    Skip,
    /// Let it through, with the decision's headers on the response.
    Pass(Admission<'e>),
    /// Answer it with this response.
    Refuse(Refusal),
}

impl HttpVerdict<'_> {
    /// The exchange to finish, unless the request was skipped.
    pub fn into_exchange(self) -> Option<Exchange> {
        match self {
            HttpVerdict::Skip => None,
            HttpVerdict::Pass(a) => Some(a.exchange),
            HttpVerdict::Refuse(r) => Some(r.exchange),
        }
    }
}

/// A request the HTTP layer lets through.
#[derive(Debug)]
pub struct Admission<'e> {
    /// The verified caller; `None` on a public path, and in the
    /// [`RateLimit`](crate::http::HttpStage::RateLimit) stage.
    pub identity: Option<Arc<Identity>>,
    /// Every layer decided on the request (none when no rule matched or the caller is on an
    /// allow list).
    pub decision: Decision<'e>,
    /// To finish when the response is.
    pub exchange: Exchange,
}

impl Admission<'_> {
    /// The headers to add to the response: the decision's rate-limit headers.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        self.decision.headers()
    }
}

/// A request the HTTP layer answers itself.
#[derive(Debug)]
pub struct Refusal {
    /// The response to write.
    pub response: Response,
    /// To finish when the response is written.
    pub exchange: Exchange,
    /// For a rate-limit refusal within the request's [`may_wait`] budget: how long to wait
    /// before asking again. The refusal was not recorded, and its exchange records nothing: a
    /// host that stops waiting (the client went away) drops it.
    ///
    /// [`may_wait`]: crate::http::HttpRequest::may_wait
    pub retry_in: Option<std::time::Duration>,
}

/// One request between the HTTP layer's decision and its response: hand it to
/// [`Engine::http_finish`] once the response is finished. Plain owned data: it may be kept,
/// moved to another thread, and dropped unfinished (then nothing is recorded or refunded).
///
/// [`Engine::http_finish`]: crate::Engine::http_finish
#[derive(Debug, Clone)]
pub struct Exchange {
    method: SmallVec<[u8; 16]>,
    path: SmallVec<[u8; 64]>,
    pub(crate) started: Timestamp,
    pub(crate) records: bool,
    pub(crate) pending: Vec<Pending>,
    /// The generation of the engine's rules `pending` names (see `Engine::reload`).
    pub(crate) live: u64,
}

impl Exchange {
    pub(crate) fn new(
        method: &str,
        path: &str,
        started: Timestamp,
        records: bool,
        live: u64,
    ) -> Self {
        Exchange {
            method: SmallVec::from_slice(method.as_bytes()),
            path: SmallVec::from_slice(path.as_bytes()),
            started,
            records,
            pending: Vec::new(),
            live,
        }
    }

    /// The method, as received.
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or("")
    }

    /// The path in normal form: what rules matched and monitoring records.
    pub fn path(&self) -> &str {
        std::str::from_utf8(&self.path).unwrap_or("/")
    }

    /// When the HTTP layer saw the request.
    pub fn started(&self) -> Timestamp {
        self.started
    }

    /// Whether finishing it records the response (the first stage of a request does).
    pub fn records_response(&self) -> bool {
        self.records
    }

    /// Stops [`Engine::http_finish`] from recording the response: an earlier middleware of
    /// the same request records it.
    ///
    /// [`Engine::http_finish`]: crate::Engine::http_finish
    pub fn skip_recording(&mut self) {
        self.records = false;
    }

    /// Whether finishing it can change limiter state (a rule hears about the response).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether finishing it may wait on the shared store: a host with an event loop finishes
    /// it off the loop then.
    pub fn touches_shared_store(&self) -> bool {
        self.pending.iter().any(|p| p.store == StoreUsed::Redis)
    }
}

/// A layer that consumed for a request whose response it will hear about: enough to find its
/// state again.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) rule: u32,
    pub(crate) variant: u32,
    pub(crate) slot: u64,
    pub(crate) key: SmallVec<[u8; 32]>,
    pub(crate) cost: u64,
    /// When the store decided (what a refund names).
    pub(crate) at: Timestamp,
    pub(crate) store: StoreUsed,
}
