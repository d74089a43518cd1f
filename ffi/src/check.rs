//! Rate-limit decisions on a request described by its parts: `fw_check`, `fw_check_many`,
//! `fw_check_with_headers`.

use std::ffi::c_char;

use floodwall_core::{Decision, Request, StoreUsed, Timestamp};

use crate::engine::fw_engine;
use crate::error::{Failure, failure, fw_result};
use crate::ffi::{Out, non_null, optional, text, to_handle, try_ref};
use crate::headers::{HeadersBox, fw_headers};
use crate::http::fw_header;
use crate::panic::guard;

/// Which store decided.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fw_store {
    /// The in-process store.
    FW_STORE_MEMORY = 0,
    /// Redis (single node or cluster).
    FW_STORE_REDIS = 1,
    /// The in-process fallback while Redis is unavailable.
    FW_STORE_FALLBACK = 2,
    /// Redis was unavailable and the `on_error` policy (allow or deny) decided.
    FW_STORE_UNAVAILABLE = 3,
    /// A denial Redis gave a moment ago, answered again while its wait runs (the deny cache).
    FW_STORE_DENY_CACHE = 4,
}

/// One request to decide on. `method` and `path` are required; `subject`, `role` and `ip`
/// may be NULL. `now_ms` below 0 means the engine's clock. `headers` (for rules keyed on
/// `header:NAME`) may be NULL when `headers_len` is 0, so that an initializer that stops at
/// `now_ms` is a request without headers.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fw_request {
    /// HTTP method, any case.
    pub method: *const c_char,
    /// Request path (a query string is ignored).
    pub path: *const c_char,
    /// The verified subject, or NULL.
    pub subject: *const c_char,
    /// The caller's role, or NULL.
    pub role: *const c_char,
    /// The client address, or NULL.
    pub ip: *const c_char,
    /// Units taken from every matching limit (0 peeks).
    pub cost: u64,
    /// Milliseconds since the Unix epoch, or a negative number for the engine's clock.
    pub now_ms: i64,
    /// The request's headers, for rules keyed on `header:NAME` (names any case), or NULL.
    pub headers: *const fw_header,
    /// How many `headers` there are.
    pub headers_len: usize,
}

/// A request read from C: its fields, and its headers as the core's [`Request`] borrows them.
pub(crate) struct ParsedRequest<'a> {
    request: Request<'a>,
    headers: Vec<(&'a str, &'a str)>,
}

impl ParsedRequest<'_> {
    /// The request, with its headers.
    pub(crate) fn request(&self) -> Request<'_> {
        self.request.headers(&self.headers)
    }
}

/// A rate-limit decision.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fw_decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// Index of the deciding rule (see `fw_engine_rule_name`), or -1 when no rule matched.
    pub rule_index: i32,
    /// The deciding layer's limit (0 when no rule matched).
    pub limit: u64,
    /// What remains on the deciding layer (0 when no rule matched).
    pub remaining: u64,
    /// Milliseconds until the deciding layer is back to its full quota.
    pub reset_after_ms: u64,
    /// Milliseconds to wait before retrying (0 when allowed).
    pub retry_after_ms: u64,
    /// Which store decided.
    pub store: fw_store,
    /// Whether it is denied because its key is blocked (`block_for`): `retry_after_ms` is
    /// the block's end.
    pub blocked: bool,
    /// The places it holds of `concurrency` rules, kept by the engine under this number until
    /// `fw_release` (or the rule's `max_hold`); 0 when it holds none.
    pub permit: u64,
}

/// # Safety
/// `request` is NULL or points to a valid `fw_request` whose strings (and `headers_len`
/// header lines) live for `'a`.
pub(crate) unsafe fn request_of<'a>(
    request: *const fw_request,
) -> Result<ParsedRequest<'a>, Failure> {
    non_null(request, "request")?;
    // SAFETY: checked non-null; the caller keeps it valid for the call.
    let r = unsafe { &*request };
    // SAFETY: the strings of a valid request are NUL-terminated or NULL.
    let (method, path, subject, role, ip) = unsafe {
        (
            text(r.method, "request.method")?,
            text(r.path, "request.path")?,
            optional(r.subject, "request.subject")?,
            optional(r.role, "request.role")?,
            optional(r.ip, "request.ip")?,
        )
    };
    let mut out = Request::new(method, path).cost(r.cost);
    out.subject = subject;
    out.role = role;
    out.ip = ip;
    if r.now_ms >= 0 {
        out = out.at(Timestamp::from_millis(r.now_ms as u64));
    }
    let mut headers = Vec::with_capacity(r.headers_len);
    if r.headers_len > 0 {
        non_null(r.headers, "request.headers")?;
        // SAFETY: `headers_len` valid elements, by the function's contract.
        let lines = unsafe { std::slice::from_raw_parts(r.headers, r.headers_len) };
        for (i, line) in lines.iter().enumerate() {
            // SAFETY: each line's strings are NUL-terminated, by the function's contract.
            headers.push(unsafe {
                (
                    text(line.name, format_args!("request.headers[{i}].name"))?,
                    text(line.value, format_args!("request.headers[{i}].value"))?,
                )
            });
        }
    }
    Ok(ParsedRequest {
        request: out,
        headers,
    })
}

/// `store` as C names it.
pub(crate) fn store_of(store: StoreUsed) -> fw_store {
    match store {
        StoreUsed::Memory => fw_store::FW_STORE_MEMORY,
        StoreUsed::Redis => fw_store::FW_STORE_REDIS,
        StoreUsed::Fallback => fw_store::FW_STORE_FALLBACK,
        StoreUsed::Unavailable => fw_store::FW_STORE_UNAVAILABLE,
        StoreUsed::DenyCache => fw_store::FW_STORE_DENY_CACHE,
    }
}

/// `d` as C sees it; the engine keeps its permit, if it holds one, under the number written.
pub(crate) fn decision_of(d: &mut Decision<'_>) -> fw_decision {
    let rule_index = d.rule_index().map_or(-1, |i| i as i32);
    fw_decision {
        allowed: d.allowed(),
        rule_index,
        limit: d.limit().unwrap_or(0),
        remaining: d.remaining().unwrap_or(0),
        reset_after_ms: d.reset_after_ms(),
        retry_after_ms: d.retry_after_ms(),
        store: store_of(d.store()),
        blocked: d.blocked(),
        permit: d.keep_permit(),
    }
}

/// Gives back the places a decision holds of `concurrency` rules (its `permit`) once its
/// request is done; one store call (on Redis, one round trip). `FW_OK` for a permit of 0
/// (nothing held); `FW_INVALID_ARGUMENT` for a number the engine keeps no permit under
/// (released already, or another engine's).
///
/// # Safety
/// `engine` is a live handle. Thread-safe: any thread may release any permit of the engine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_release(engine: *const fw_engine, permit: u64) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let engine = unsafe { try_ref(engine, "engine") }?;
        if permit == 0 || engine.release_kept(permit) {
            return Ok(());
        }
        Err(failure(
            fw_result::FW_INVALID_ARGUMENT,
            format!("the engine holds no permit {permit}: released already, or never its own"),
        ))
    })
}

/// Decides on `request`: every matching rule at once, all-or-nothing.
///
/// # Safety
/// `engine` is a live handle; `request` points to a valid request; `out` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_check(
    engine: *const fw_engine,
    request: *const fw_request,
    out: *mut fw_decision,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (out, engine, request) = unsafe {
            (
                Out::new(out, "out")?,
                try_ref(engine, "engine")?,
                request_of(request)?,
            )
        };
        out.write(decision_of(&mut engine.check(&request.request())?));
        Ok(())
    })
}

/// Decides like `fw_check` and, while the request is denied with a wait that fits in
/// `max_wait_ms`, waits for capacity and asks again (first come, first served among this
/// engine's waiters for the same limits; woken early when a `concurrency` place is
/// released): `out` receives the admission, or the last denial. Blocks the calling thread;
/// decides on the engine's clock (`request.now_ms` is ignored).
///
/// # Safety
/// As `fw_check`. Thread-safe: any number of threads may wait at once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_acquire(
    engine: *const fw_engine,
    request: *const fw_request,
    max_wait_ms: u64,
    out: *mut fw_decision,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (out, engine, request) = unsafe {
            (
                Out::new(out, "out")?,
                try_ref(engine, "engine")?,
                request_of(request)?,
            )
        };
        let wait = std::time::Duration::from_millis(max_wait_ms);
        out.write(decision_of(&mut engine.acquire(&request.request(), wait)?));
        Ok(())
    })
}

/// Decides on `count` requests in turn (one round trip on Redis). `results[i]` receives each
/// request's code and `out[i]` its decision when that code is `FW_OK`; the call itself
/// returns `FW_OK` unless an argument is unusable.
///
/// # Safety
/// `requests`, `out` and `results` are valid arrays of `count` elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_check_many(
    engine: *const fw_engine,
    requests: *const fw_request,
    count: usize,
    out: *mut fw_decision,
    results: *mut fw_result,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let engine = unsafe { try_ref(engine, "engine") }?;
        if count == 0 {
            return Ok(());
        }
        non_null(requests, "requests")?;
        non_null(out, "out")?;
        non_null(results, "results")?;
        // SAFETY: `count` valid elements each.
        let (requests, out, results) = unsafe {
            (
                std::slice::from_raw_parts(requests, count),
                std::slice::from_raw_parts_mut(out, count),
                std::slice::from_raw_parts_mut(results, count),
            )
        };
        let read: Vec<ParsedRequest<'_>> = requests
            .iter()
            // SAFETY: each element is a valid request.
            .map(|r| unsafe { request_of(r) })
            .collect::<Result<_, _>>()?;
        let parsed: Vec<Request<'_>> = read.iter().map(ParsedRequest::request).collect();
        for (i, d) in engine.check_many(&parsed).into_iter().enumerate() {
            match d {
                Ok(mut d) => {
                    out[i] = decision_of(&mut d);
                    results[i] = fw_result::FW_OK;
                }
                Err(e) => results[i] = fw_result::of(e.kind()),
            }
        }
        Ok(())
    })
}

/// Decides on `request` and renders the decision's response headers into a new
/// `fw_headers` (free it with `fw_headers_free`).
///
/// # Safety
/// As `fw_check`; `out_headers` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_check_with_headers(
    engine: *const fw_engine,
    request: *const fw_request,
    out: *mut fw_decision,
    out_headers: *mut *mut fw_headers,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (out, out_headers, engine, request) = unsafe {
            (
                Out::new(out, "out")?,
                Out::new(out_headers, "out_headers")?,
                try_ref(engine, "engine")?,
                request_of(request)?,
            )
        };
        let mut d = engine.check(&request.request())?;
        out.write(decision_of(&mut d));
        out_headers.write(to_handle(HeadersBox::new(d.headers())));
        Ok(())
    })
}
