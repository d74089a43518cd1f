//! `fw_http_exchange`: one request between `fw_http`'s verdict and its response — the
//! verdict, status, headers, body and identity it holds, `fw_http_finish` and its release.

use std::ffi::{CString, c_char};
use std::sync::{Mutex, PoisonError};

use floodwall_core::http::{Exchange, HttpVerdict};

use super::{fw_header, lines_of};
use crate::engine::fw_engine;
use crate::error::{failure, fw_result};
use crate::ffi::{Castable, Out, c_string, free_handle, try_ref};
use crate::headers::{HeadersBox, fw_headers};
use crate::identity::{IdentityBox, fw_identity};
use crate::panic::guard;

/// What the HTTP layer says of a request.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fw_http_verdict {
    /// Not the HTTP layer's to judge (a skipped path): hand the request on untouched. There is
    /// nothing to add, and finishing records nothing.
    FW_HTTP_SKIP = 0,
    /// Let it through: add the exchange's headers to the response (a header of the same name
    /// the handler sets itself wins), then finish it with the handler's status.
    FW_HTTP_PASS = 1,
    /// Answer it with the exchange's status, headers and body, then finish it with that status.
    FW_HTTP_REFUSE = 2,
}

/// One request between `fw_http`'s verdict and its response. Every call of `fw_http` that
/// succeeds makes one, whatever the verdict; free it with `fw_http_exchange_free` once the
/// response is finished (`fw_http_finish`). What it lends — its headers, body and identity —
/// stays valid until it is freed. Thread-safe: any thread may read it, and it may be finished
/// from another thread than the one that made it; finishing happens once, and freeing when no
/// other call is using it.
pub struct fw_http_exchange {
    _private: [u8; 0],
}

/// The value behind an `fw_http_exchange`.
#[derive(Debug)]
pub(crate) struct ExchangeBox {
    /// The address of the engine that made it: only that engine may finish it.
    engine: usize,
    verdict: fw_http_verdict,
    status: u16,
    headers: HeadersBox,
    body: CString,
    identity: Option<IdentityBox>,
    touches_shared_store: bool,
    progress: Mutex<Progress>,
}

#[derive(Debug)]
enum Progress {
    /// Not finished yet; `None` for a skipped request (nothing to record).
    Open(Option<Exchange>),
    Finished,
}

impl Castable for fw_http_exchange {
    type RustType = ExchangeBox;
}

impl ExchangeBox {
    pub(super) fn new(engine: *const fw_engine, verdict: HttpVerdict<'_>) -> Self {
        let mut boxed = ExchangeBox {
            engine: engine as usize,
            verdict: fw_http_verdict::FW_HTTP_SKIP,
            status: 0,
            headers: HeadersBox::default(),
            body: CString::default(),
            identity: None,
            touches_shared_store: false,
            progress: Mutex::new(Progress::Open(None)),
        };
        let exchange = match verdict {
            HttpVerdict::Skip => return boxed,
            HttpVerdict::Pass(admission) => {
                boxed.verdict = fw_http_verdict::FW_HTTP_PASS;
                boxed.headers = HeadersBox::new(admission.headers());
                boxed.identity = admission.identity.map(IdentityBox::new);
                admission.exchange
            }
            HttpVerdict::Refuse(refusal) => {
                let response = refusal.response;
                boxed.verdict = fw_http_verdict::FW_HTTP_REFUSE;
                boxed.status = response.status;
                boxed.headers = HeadersBox::new(response.headers);
                boxed.body = c_string(response.body);
                refusal.exchange
            }
        };
        boxed.touches_shared_store = exchange.touches_shared_store();
        boxed.progress = Mutex::new(Progress::Open(Some(exchange)));
        boxed
    }
}

/// The exchange's verdict.
///
/// # Safety
/// `exchange` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_http_exchange_verdict(
    exchange: *const fw_http_exchange,
    out: *mut fw_http_verdict,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (x, out) = unsafe { (try_ref(exchange, "exchange")?, Out::new(out, "out")?) };
        out.write(x.verdict);
        Ok(())
    })
}

/// The status to answer with on `FW_HTTP_REFUSE` (400, 401, 403, 429 or 503); 0 for the other
/// verdicts, where the handler answers.
///
/// # Safety
/// `exchange` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_http_exchange_status(
    exchange: *const fw_http_exchange,
    out: *mut u16,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (x, out) = unsafe { (try_ref(exchange, "exchange")?, Out::new(out, "out")?) };
        out.write(x.status);
        Ok(())
    })
}

/// The headers to write, in order, with the names spelt as they are to be sent
/// (`WWW-Authenticate`, `RateLimit-Policy`): on `FW_HTTP_REFUSE` every header of the answer
/// (`Content-Type` and `Content-Length` included), on `FW_HTTP_PASS` the rate-limit headers to
/// add, on `FW_HTTP_SKIP` none. Read them with `fw_headers_len` and `fw_headers_get`. They
/// are lent by the exchange: valid until it is freed, and not to be passed to
/// `fw_headers_free`.
///
/// # Safety
/// `exchange` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_http_exchange_headers(
    exchange: *const fw_http_exchange,
    out: *mut *const fw_headers,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (x, out) = unsafe { (try_ref(exchange, "exchange")?, Out::new(out, "out")?) };
        out.write((&x.headers as *const HeadersBox).cast::<fw_headers>());
        Ok(())
    })
}

/// The body to write on `FW_HTTP_REFUSE` (an `application/problem+json` document; empty for
/// the other verdicts), NUL-terminated and owned by the exchange; its length (without the NUL)
/// goes to `out_len` unless that is NULL. A host answering `HEAD` writes the headers only.
///
/// # Safety
/// `exchange` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_http_exchange_body(
    exchange: *const fw_http_exchange,
    out: *mut *const c_char,
    out_len: *mut usize,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (x, out, out_len) = unsafe {
            (
                try_ref(exchange, "exchange")?,
                Out::new(out, "out")?,
                Out::optional(out_len),
            )
        };
        if let Some(out_len) = out_len {
            out_len.write(x.body.as_bytes().len());
        }
        out.write(x.body.as_ptr());
        Ok(())
    })
}

/// The caller the HTTP layer verified, on `FW_HTTP_PASS` in the `FW_HTTP_GUARD` and
/// `FW_HTTP_AUTHENTICATE` stages; NULL on a public path, in the `FW_HTTP_RATE_LIMIT` stage
/// and for the other verdicts. The identity is lent by the exchange: valid until it is freed,
/// and not to be passed to `fw_identity_free`.
///
/// # Safety
/// `exchange` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_http_exchange_identity(
    exchange: *const fw_http_exchange,
    out: *mut *const fw_identity,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (x, out) = unsafe { (try_ref(exchange, "exchange")?, Out::new(out, "out")?) };
        out.write(x.identity.as_ref().map_or(std::ptr::null(), |id| {
            (id as *const IdentityBox).cast::<fw_identity>()
        }));
        Ok(())
    })
}

/// Whether `fw_http_finish` may write to the shared store (one round trip to Redis, up to
/// `store.timeout`): a host on an event loop finishes such an exchange off the loop.
///
/// # Safety
/// `exchange` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_http_exchange_touches_shared_store(
    exchange: *const fw_http_exchange,
    out: *mut bool,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (x, out) = unsafe { (try_ref(exchange, "exchange")?, Out::new(out, "out")?) };
        out.write(x.touches_shared_store);
        Ok(())
    })
}

/// Finishes an exchange once its response is: records the response (`status`, 100 to 999,
/// and the time since `fw_http`, under the normal path) and settles the rules that count by
/// response — refunds for the statuses they do not count, and the extra cost a response header
/// names (`response_headers`: those `fw_engine_http_response_headers` names, or all of them,
/// NULL when `len` is 0). `engine` is the engine that made the exchange. An exchange is
/// finished once: a second call fails with `FW_INVALID_ARGUMENT` and changes nothing, as does a
/// call with unusable arguments. Finishing a skipped request records nothing. The exchange
/// still needs `fw_http_exchange_free`.
///
/// # Safety
/// `engine` and `exchange` are live handles; `response_headers` is NULL or valid for `len`
/// elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_http_finish(
    engine: *const fw_engine,
    exchange: *mut fw_http_exchange,
    status: u16,
    response_headers: *const fw_header,
    len: usize,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (core, x, lines) = unsafe {
            (
                try_ref(engine, "engine")?,
                try_ref(exchange.cast_const(), "exchange")?,
                lines_of(response_headers, len, "response_headers")?,
            )
        };
        if !floodwall_core::monitor::HTTP_STATUSES.contains(&status) {
            return Err(failure(
                fw_result::FW_INVALID_ARGUMENT,
                format!("status {status} is not an HTTP status (100 to 999)"),
            ));
        }
        if x.engine != engine as usize {
            return Err(failure(
                fw_result::FW_INVALID_ARGUMENT,
                "the exchange was made by another engine",
            ));
        }
        let progress = std::mem::replace(
            &mut *x.progress.lock().unwrap_or_else(PoisonError::into_inner),
            Progress::Finished,
        );
        match progress {
            Progress::Finished => Err(failure(
                fw_result::FW_INVALID_ARGUMENT,
                "the exchange is already finished",
            )),
            Progress::Open(None) => Ok(()),
            Progress::Open(Some(open)) => {
                core.http_finish(open, status, &lines);
                Ok(())
            }
        }
    })
}

/// Frees an exchange (NULL does nothing). One freed unfinished records nothing and refunds
/// nothing.
///
/// # Safety
/// `exchange` is NULL or a live handle, freed once, when no other call is using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_http_exchange_free(exchange: *mut fw_http_exchange) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(exchange) }
}
