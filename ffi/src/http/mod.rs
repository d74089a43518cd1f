//! The HTTP layer (`floodwall::http`) for a host's middleware: `fw_http` decides on a request
//! as received and answers an `fw_http_exchange` — pass it on untouched, let it through with
//! headers to add, or answer it with the status, headers and body it holds — and
//! `fw_http_finish` hands the response back once it is written. The allow and deny lists can
//! be read and replaced while the engine serves.

// The areas after this file's `fw_http`, in the order of the header (cbindgen reads a
// module's own items first, then its modules in turn).
mod exchange;
mod settings;

use std::borrow::Cow;
use std::ffi::c_char;

use floodwall_core::Timestamp;
use floodwall_core::http::{HeaderLookup, HttpRequest, HttpStage};

use crate::engine::fw_engine;
use crate::error::{Failure, failure, fw_result};
use crate::ffi::{Out, non_null, optional, text, to_handle, try_ref};
use crate::panic::guard;

pub use exchange::*;
pub use settings::*;

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
