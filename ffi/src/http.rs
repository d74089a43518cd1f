//! The HTTP layer (`floodwall::http`) for a host's middleware: `fw_http` decides on a request
//! as received and answers an `fw_http_exchange` — pass it on untouched, let it through with
//! headers to add, or answer it with the status, headers and body it holds — and
//! `fw_http_finish` hands the response back once it is written. The allow and deny lists can
//! be read and replaced while the engine serves.

use std::borrow::Cow;
use std::ffi::{CString, c_char};
use std::sync::{Mutex, PoisonError};

use floodwall_core::Timestamp;
use floodwall_core::http::{
    AccessLists, Exchange, HeaderLookup, HttpRequest, HttpStage, HttpVerdict,
};

use crate::engine::fw_engine;
use crate::error::{Failure, failure, fw_result};
use crate::ffi::{
    Castable, Out, c_string, engine_string, free_handle, non_null, optional, text, to_handle,
    try_ref,
};
use crate::headers::{HeadersBox, fw_headers};
use crate::identity::{IdentityBox, fw_identity};
use crate::panic::guard;

/// Which part of the HTTP layer a middleware is.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fw_http_stage {
    /// Everything in one call: the token, the allow and deny lists, and every rule.
    FW_HTTP_GUARD = 0,
    /// The token, the lists and the rules decided before the token — no other rule.
    FW_HTTP_AUTHENTICATE = 1,
    /// The rules only (an engine without `[auth]`, or after an `FW_HTTP_AUTHENTICATE` stage:
    /// see `fw_http_request.after_authenticate`).
    FW_HTTP_RATE_LIMIT = 2,
}

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

/// One header line: a NUL-terminated name (any case) and value.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fw_header {
    /// The header's name, any case.
    pub name: *const c_char,
    /// Its value.
    pub value: *const c_char,
}

/// A request as a host's server received it, for `fw_http`. Every string is NUL-terminated
/// UTF-8; those marked "or NULL" may be NULL.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fw_http_request {
    /// The method, as received.
    pub method: *const c_char,
    /// The request target, as received: `/api/orders?page=2`, or the absolute form. The
    /// engine normalises it; do not clean it first.
    pub target: *const c_char,
    /// The socket peer's address (any spelling, a port allowed), or NULL when unknown. The
    /// client address is worked out from it and the `[http]` section (trusted proxies).
    pub peer: *const c_char,
    /// The request's headers: those `fw_engine_http_headers` names, or all of them. Lines of the
    /// same name are joined with `,` in their order. NULL when `headers_len` is 0.
    pub headers: *const fw_header,
    /// How many `headers` there are.
    pub headers_len: usize,
    /// The units the request takes from every matching limit, as the host's cost function
    /// answered: 1 for an ordinary request, 0 to take nothing. Anything but an integer from 0
    /// to 2^53 (a fraction, a negative number, NaN) is answered 400 `invalid_cost`.
    pub cost: f64,
    /// The stage: an `fw_http_stage`.
    pub stage: u32,
    /// For `FW_HTTP_RATE_LIMIT`: the subject an earlier stage verified, or NULL.
    pub caller_subject: *const c_char,
    /// For `FW_HTTP_RATE_LIMIT`: that caller's role, or NULL.
    pub caller_role: *const c_char,
    /// For `FW_HTTP_RATE_LIMIT`: whether an `FW_HTTP_AUTHENTICATE` stage saw the request first
    /// (then it applied the rules decided before the token, and it records the response).
    pub after_authenticate: bool,
    /// Milliseconds since the Unix epoch, or a negative number for the engine's clock.
    pub now_ms: i64,
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
    fn new(engine: *const fw_engine, verdict: HttpVerdict<'_>) -> Self {
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

/// Header lines from C, for the HTTP layer: names compared case-insensitively, lines of the
/// same name joined with `,`.
struct Lines<'a>(Vec<(&'a str, Cow<'a, str>)>);

impl HeaderLookup for Lines<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }
}

/// Reads `len` header lines at `lines` (NULL when `len` is 0); `what` names the array in errors.
///
/// # Safety
/// `lines` is NULL or valid for `len` elements whose strings live for `'a`.
unsafe fn lines_of<'a>(
    lines: *const fw_header,
    len: usize,
    what: &str,
) -> Result<Lines<'a>, Failure> {
    if len == 0 {
        return Ok(Lines(Vec::new()));
    }
    non_null(lines, what)?;
    // SAFETY: `len` valid elements, by the function's contract.
    let lines = unsafe { std::slice::from_raw_parts(lines, len) };
    let mut out: Vec<(&'a str, Cow<'a, str>)> = Vec::with_capacity(len);
    for (i, line) in lines.iter().enumerate() {
        // SAFETY: the strings of a valid line are NUL-terminated or NULL.
        let (name, value) = unsafe {
            (
                text(line.name, format_args!("{what}[{i}].name"))?,
                text(line.value, format_args!("{what}[{i}].value"))?,
            )
        };
        match out.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, joined)) => {
                let joined = joined.to_mut();
                joined.push(',');
                joined.push_str(value);
            }
            None => out.push((name, Cow::Borrowed(value))),
        }
    }
    Ok(Lines(out))
}

fn stage_of(stage: u32) -> Result<HttpStage, Failure> {
    match stage {
        0 => Ok(HttpStage::Guard),
        1 => Ok(HttpStage::Authenticate),
        2 => Ok(HttpStage::RateLimit),
        other => Err(failure(
            fw_result::FW_INVALID_ARGUMENT,
            format!("request.stage {other} is not an fw_http_stage"),
        )),
    }
}

/// The HTTP layer's verdict on `request`, in a new exchange (`*out`) whatever the verdict:
/// read it with the `fw_http_exchange_*` functions, finish it with `fw_http_finish` once the
/// response is written, and free it with `fw_http_exchange_free`. Refusals — 400, 401, 403,
/// 429, 503 — are verdicts, not errors: the call fails only for an unusable argument (a NULL
/// required string, text that is not UTF-8, an unknown stage, a caller's role without its
/// subject). On a Redis store it may wait on the network (up to `store.timeout` per step).
///
/// # Safety
/// `engine` is a live handle; `request` points to a valid `fw_http_request` whose strings and
/// headers live for the call; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_http(
    engine: *const fw_engine,
    request: *const fw_http_request,
    out: *mut *mut fw_http_exchange,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (out, core, r) = unsafe {
            (
                Out::new(out, "out")?,
                try_ref(engine, "engine")?,
                request
                    .as_ref()
                    .ok_or_else(|| failure(fw_result::FW_NULL_ARGUMENT, "request is NULL"))?,
            )
        };
        // SAFETY: the strings and headers of a valid request live for the call.
        let (method, target, peer, subject, role, lines) = unsafe {
            (
                text(r.method, "request.method")?,
                text(r.target, "request.target")?,
                optional(r.peer, "request.peer")?,
                optional(r.caller_subject, "request.caller_subject")?,
                optional(r.caller_role, "request.caller_role")?,
                lines_of(r.headers, r.headers_len, "request.headers")?,
            )
        };
        let mut request = HttpRequest::new(method, target, &lines)
            .cost(r.cost)
            .stage(stage_of(r.stage)?);
        if let Some(peer) = peer {
            request = request.peer(peer);
        }
        match (subject, role) {
            (Some(subject), role) => request = request.caller(subject, role),
            (None, Some(_)) => {
                return Err(failure(
                    fw_result::FW_INVALID_ARGUMENT,
                    "request.caller_role is set without request.caller_subject",
                ));
            }
            (None, None) => {}
        }
        if r.after_authenticate {
            request = request.after_authenticate();
        }
        if r.now_ms >= 0 {
            request = request.at(Timestamp::from_millis(r.now_ms as u64));
        }
        out.write(to_handle(ExchangeBox::new(engine, core.http(&request))));
        Ok(())
    })
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

/// The request headers the HTTP layer reads, lower-case, separated by `\n` (at least
/// `authorization`, `x-forwarded-for` and `forwarded`, then the headers rules are keyed on),
/// in a new string the caller frees with `fw_string_free`; its length (without the NUL) goes
/// to `out_len` unless that is NULL. A host hands `fw_http` only these. The allow and deny
/// lists add the headers they name: ask again after `fw_engine_set_access_lists_json`.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_http_headers(
    engine: *const fw_engine,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    // SAFETY: forwarded (see the function's contract).
    unsafe { engine_string(engine, out, out_len, |e| e.http_headers().join("\n")) }
}

/// The response headers `fw_http_finish` reads (the rules' `cost_header`s), lower-case, one
/// per line — an empty string when no rule has one — in a new string the caller frees with
/// `fw_string_free`; its length (without the NUL) goes to `out_len` unless that is NULL.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_http_response_headers(
    engine: *const fw_engine,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    // SAFETY: forwarded (see the function's contract).
    unsafe {
        engine_string(engine, out, out_len, |e| {
            e.http_response_headers().join("\n")
        })
    }
}

/// The allow and deny lists in force, as JSON (`{"allow":{"addresses":[…],"subjects":[…],
/// "roles":[…],"headers":{…}},"deny":{…}}`), in a new string the caller frees with
/// `fw_string_free`; its length (without the NUL) goes to `out_len` unless that is NULL.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_access_lists_json(
    engine: *const fw_engine,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    // SAFETY: forwarded (see the function's contract).
    unsafe { engine_string(engine, out, out_len, |e| e.access_lists().to_json()) }
}

/// Replaces the allow and deny lists while the engine serves, from JSON of the shape
/// `fw_engine_access_lists_json` gives (a list left out is emptied); requests decided from then
/// on see the new lists. A document that does not fit, or an entry that is not an address, a
/// network or a header name, is `FW_INVALID_CONFIG` naming it (`deny.addresses[2]`), and the
/// lists in force are kept.
///
/// # Safety
/// `engine` is a live handle; `json` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_set_access_lists_json(
    engine: *const fw_engine,
    json: *const c_char,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (engine, json) = unsafe { (try_ref(engine, "engine")?, text(json, "json")?) };
        engine.set_access_lists(&AccessLists::from_json(json)?)?;
        Ok(())
    })
}
