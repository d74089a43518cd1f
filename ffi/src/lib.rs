//! The C ABI of floodwall: `include/floodwall.h`, generated from this file by cbindgen.
//!
//! Conventions (after rustls-ffi):
//! - Every function returns an [`fw_result`] — but `fw_version` (a static string) and the
//!   `_free` functions (which cannot fail): `FW_OK`, or a code from a group that never
//!   changes meaning (1xx the caller's use of the ABI, 2xx configuration, 3xx rate limits,
//!   4xx authentication, 5xx upstreams); the core's error kinds map one to one.
//! - Results go through out-pointers, written only on success.
//! - Handles (`fw_engine`, `fw_identity`, `fw_headers`, `fw_lease`) are opaque, made by the
//!   library and released by their `_free` function; `_free(NULL)` does nothing.
//! - Strings in are NUL-terminated UTF-8; NULL or invalid UTF-8 is an error, never a crash.
//!   Strings out are owned by the handle they come from (valid until it is freed), copied
//!   into a caller's buffer with the required length reported, or — for a document made anew
//!   by each call, whose length the caller cannot know beforehand (`fw_report_json`,
//!   `fw_prometheus`) — a new string the caller owns and releases with `fw_string_free`.
//! - The message of the last failed call on the calling thread is available from
//!   `fw_last_error_message` (and, for authentication failures, the `WWW-Authenticate` value
//!   from `fw_last_error_www_authenticate`).
//! - No panic crosses the boundary: every body runs under `catch_unwind` (`FW_PANIC`).
//!
//! Thread safety: an `fw_engine` may be used from any number of threads at once. An
//! `fw_identity` and an `fw_headers` are immutable and may be read from any thread. An
//! `fw_lease` may be finished or freed from any thread, but by one thread only. A string from
//! `fw_report_json` or `fw_prometheus` belongs to the caller: any thread may read or free it.

#![allow(unsafe_code)]
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use floodwall_core::{
    CallOutcome, Decision, Engine, ErrorKind, Identity, Lease, Request, StoreUsed, Timestamp,
    UpstreamStatus,
};

/// Major version of the library (matches `Cargo.toml`).
pub const FW_VERSION_MAJOR: u32 = 0;
/// Minor version of the library.
pub const FW_VERSION_MINOR: u32 = 1;
/// Patch version of the library.
pub const FW_VERSION_PATCH: u32 = 0;

/// What a call came to. Codes are grouped and never reused.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fw_result {
    /// Success.
    FW_OK = 0,
    /// A required pointer argument was NULL.
    FW_NULL_ARGUMENT = 100,
    /// A string argument was not valid UTF-8.
    FW_INVALID_UTF8 = 101,
    /// An argument was out of range (an unknown enum value, a string with a NUL byte).
    FW_INVALID_ARGUMENT = 102,
    /// The caller's buffer is too small; the required length was written.
    FW_BUFFER_TOO_SMALL = 103,
    /// floodwall panicked (a bug); the call had no effect the caller can rely on.
    FW_PANIC = 198,
    /// An error kind this header does not know yet (a newer core).
    FW_UNKNOWN_ERROR = 199,
    /// `invalid_config`: the configuration could not be read or is invalid.
    FW_INVALID_CONFIG = 200,
    /// `cost_exceeds_limit`: the request's cost can never be admitted.
    FW_COST_EXCEEDS_LIMIT = 300,
    /// `missing_token`.
    FW_MISSING_TOKEN = 400,
    /// `malformed_token`.
    FW_MALFORMED_TOKEN = 401,
    /// `token_too_large`.
    FW_TOKEN_TOO_LARGE = 402,
    /// `algorithm_not_allowed`.
    FW_ALGORITHM_NOT_ALLOWED = 403,
    /// `unknown_key`.
    FW_UNKNOWN_KEY = 404,
    /// `bad_signature`.
    FW_BAD_SIGNATURE = 405,
    /// `expired`.
    FW_EXPIRED = 406,
    /// `not_yet_valid`.
    FW_NOT_YET_VALID = 407,
    /// `wrong_issuer`.
    FW_WRONG_ISSUER = 408,
    /// `wrong_audience`.
    FW_WRONG_AUDIENCE = 409,
    /// `missing_claim`.
    FW_MISSING_CLAIM = 410,
    /// `invalid_claim`.
    FW_INVALID_CLAIM = 411,
    /// `no_upstream_available`.
    FW_NO_UPSTREAM_AVAILABLE = 500,
    /// `unknown_service`.
    FW_UNKNOWN_SERVICE = 501,
    /// `unknown_upstream`.
    FW_UNKNOWN_UPSTREAM = 502,
    /// `store_unavailable`: the shared store failed and `store.on_error` is `"error"`.
    FW_STORE_FAILED = 600,
}

impl fw_result {
    fn of(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidConfig => fw_result::FW_INVALID_CONFIG,
            ErrorKind::CostExceedsLimit => fw_result::FW_COST_EXCEEDS_LIMIT,
            ErrorKind::MissingToken => fw_result::FW_MISSING_TOKEN,
            ErrorKind::MalformedToken => fw_result::FW_MALFORMED_TOKEN,
            ErrorKind::TokenTooLarge => fw_result::FW_TOKEN_TOO_LARGE,
            ErrorKind::AlgorithmNotAllowed => fw_result::FW_ALGORITHM_NOT_ALLOWED,
            ErrorKind::UnknownKey => fw_result::FW_UNKNOWN_KEY,
            ErrorKind::BadSignature => fw_result::FW_BAD_SIGNATURE,
            ErrorKind::Expired => fw_result::FW_EXPIRED,
            ErrorKind::NotYetValid => fw_result::FW_NOT_YET_VALID,
            ErrorKind::WrongIssuer => fw_result::FW_WRONG_ISSUER,
            ErrorKind::WrongAudience => fw_result::FW_WRONG_AUDIENCE,
            ErrorKind::MissingClaim => fw_result::FW_MISSING_CLAIM,
            ErrorKind::InvalidClaim => fw_result::FW_INVALID_CLAIM,
            ErrorKind::NoUpstreamAvailable => fw_result::FW_NO_UPSTREAM_AVAILABLE,
            ErrorKind::UnknownService => fw_result::FW_UNKNOWN_SERVICE,
            ErrorKind::UnknownUpstream => fw_result::FW_UNKNOWN_UPSTREAM,
            ErrorKind::StoreUnavailable => fw_result::FW_STORE_FAILED,
            _ => fw_result::FW_UNKNOWN_ERROR,
        }
    }
}

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
}

/// How a call through an upstream ended.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fw_outcome {
    /// The upstream answered well.
    FW_OUTCOME_SUCCESS = 0,
    /// The upstream failed.
    FW_OUTCOME_FAILURE = 1,
    /// The call timed out (counted as a failure).
    FW_OUTCOME_TIMEOUT = 2,
}

/// One request to decide on. `method` and `path` are required; `subject`, `role` and `ip`
/// may be NULL. `now_ms` below 0 means the engine's clock.
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
}

/// An engine: compiled rules, a store, keys, upstreams. Thread-safe.
pub struct fw_engine {
    _private: [u8; 0],
}

/// A verified caller. Immutable; readable from any thread.
pub struct fw_identity {
    _private: [u8; 0],
}

/// A decision's response headers. Immutable; readable from any thread.
pub struct fw_headers {
    _private: [u8; 0],
}

/// A call in progress on one upstream. Finish it (`fw_lease_finish`) or free it
/// (`fw_lease_free`, counted as a failure) exactly once, from any one thread.
pub struct fw_lease {
    _private: [u8; 0],
}

struct IdentityBox {
    identity: Arc<Identity>,
    subject: CString,
    role: Option<CString>,
}

struct HeadersBox(Vec<(CString, CString)>);

struct LeaseBox {
    lease: Lease,
    upstream: CString,
    url: CString,
}

/// Why a call failed, for the thread-local last error.
struct Failure {
    code: fw_result,
    message: String,
    challenge: Option<String>,
}

impl From<floodwall_core::Error> for Failure {
    fn from(e: floodwall_core::Error) -> Self {
        Failure {
            code: fw_result::of(e.kind()),
            message: e.to_string(),
            challenge: e.www_authenticate().map(str::to_owned),
        }
    }
}

fn failure(code: fw_result, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
        challenge: None,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<(CString, Option<CString>)>> = const { RefCell::new(None) };
}

fn c_string(text: String) -> CString {
    CString::new(text.replace('\0', " ")).unwrap_or_default()
}

/// Runs `body` behind a panic boundary and records its failure for this thread.
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> fw_result {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        Err(failure(
            fw_result::FW_PANIC,
            "floodwall panicked (a bug; please report it)",
        ))
    });
    match outcome {
        Ok(()) => fw_result::FW_OK,
        Err(f) => {
            LAST_ERROR.with(|last| {
                *last.borrow_mut() = Some((c_string(f.message), f.challenge.map(c_string)));
            });
            f.code
        }
    }
}

/// A required string argument.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
unsafe fn text<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(failure(
            fw_result::FW_NULL_ARGUMENT,
            format!("{name} is NULL"),
        ));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|e| {
        failure(
            fw_result::FW_INVALID_UTF8,
            format!("{name} is not UTF-8: {e}"),
        )
    })
}

/// An optional string argument (NULL is `None`).
///
/// # Safety
/// As [`text`].
unsafe fn optional<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded.
        unsafe { text(p, name) }.map(Some)
    }
}

fn non_null<T>(p: *const T, name: &str) -> Result<(), Failure> {
    if p.is_null() {
        Err(failure(
            fw_result::FW_NULL_ARGUMENT,
            format!("{name} is NULL"),
        ))
    } else {
        Ok(())
    }
}

/// # Safety
/// `engine` is NULL or a live handle from this library.
unsafe fn engine_ref<'a>(engine: *const fw_engine) -> Result<&'a Engine, Failure> {
    non_null(engine, "engine")?;
    // SAFETY: a live handle is a `Box<Engine>` made by `new_engine`.
    Ok(unsafe { &*engine.cast::<Engine>() })
}

/// # Safety
/// `request` is NULL or points to a valid `fw_request` whose strings live for the call.
unsafe fn request_of<'a>(request: *const fw_request) -> Result<Request<'a>, Failure> {
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
    Ok(out)
}

fn decision_of(d: &Decision<'_>) -> fw_decision {
    let rule_index = d.rule_index().map_or(-1, |i| i as i32);
    fw_decision {
        allowed: d.allowed(),
        rule_index,
        limit: d.limit().unwrap_or(0),
        remaining: d.remaining().unwrap_or(0),
        reset_after_ms: d.reset_after_ms(),
        retry_after_ms: d.retry_after_ms(),
        store: match d.store() {
            StoreUsed::Memory => fw_store::FW_STORE_MEMORY,
            StoreUsed::Redis => fw_store::FW_STORE_REDIS,
            StoreUsed::Fallback => fw_store::FW_STORE_FALLBACK,
            _ => fw_store::FW_STORE_UNAVAILABLE,
        },
    }
}

/// Copies `text` and a NUL into `buf` (`len` bytes), writing the length without the NUL to
/// `out_len` either way.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes; `out_len` is NULL or valid.
unsafe fn copy_out(
    text: &[u8],
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> Result<(), Failure> {
    non_null(out_len, "out_len")?;
    // SAFETY: checked non-null.
    unsafe { *out_len = text.len() };
    if buf.is_null() || len < text.len() + 1 {
        return Err(failure(
            fw_result::FW_BUFFER_TOO_SMALL,
            format!("{} bytes are needed (with the NUL)", text.len() + 1),
        ));
    }
    // SAFETY: `buf` holds at least `text.len() + 1` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    Ok(())
}

/// Frees a handle made by `Box::into_raw` of a `T` (NULL does nothing), behind the panic
/// boundary.
///
/// # Safety
/// `handle` is NULL or a live handle whose box holds a `T`, freed once.
unsafe fn free_handle<H, T>(handle: *mut H) {
    let _ = guard(|| {
        if !handle.is_null() {
            // SAFETY: a live handle is a leaked `Box<T>`.
            drop(unsafe { Box::from_raw(handle.cast::<T>()) });
        }
        Ok(())
    });
}

/// Writes to `out` a string owned by the handle's `T`, as `field` picks it.
///
/// # Safety
/// `handle` is NULL or a live handle whose box holds a `T`; `out` is NULL or valid.
unsafe fn read_field<H, T>(
    handle: *const H,
    out: *mut *const c_char,
    field: impl FnOnce(&T) -> *const c_char,
) -> fw_result {
    guard(|| {
        non_null(handle, "handle")?;
        non_null(out, "out")?;
        // SAFETY: a live handle is a `Box<T>`; `out` checked.
        unsafe { *out = field(&*handle.cast::<T>()) };
        Ok(())
    })
}

/// Builds an engine from the string argument `input` with `build`.
///
/// # Safety
/// `input` is NULL or NUL-terminated; `out` is NULL or valid for a write.
unsafe fn new_engine(
    input: *const c_char,
    name: &str,
    out: *mut *mut fw_engine,
    build: impl FnOnce(&str) -> Result<Engine, floodwall_core::Error>,
) -> fw_result {
    guard(|| {
        non_null(out, "out")?;
        // SAFETY: see the function's contract.
        let input = unsafe { text(input, name) }?;
        let engine = build(input)?;
        // SAFETY: `out` checked.
        unsafe { *out = Box::into_raw(Box::new(engine)).cast::<fw_engine>() };
        Ok(())
    })
}

/// Copies the part of this thread's last error that `part` picks (empty when none).
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes; `out_len` is NULL or valid.
unsafe fn copy_last_error(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
    part: impl FnOnce(&(CString, Option<CString>)) -> Option<&CString>,
) -> fw_result {
    let text = LAST_ERROR.with(|l| {
        l.borrow()
            .as_ref()
            .and_then(part)
            .map(|t| t.as_bytes().to_vec())
            .unwrap_or_default()
    });
    // Not through `guard`: a too-small buffer must not replace the error being read.
    match catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: see the function's contract.
        unsafe { copy_out(&text, buf, len, out_len) }
    })) {
        Ok(Ok(())) => fw_result::FW_OK,
        Ok(Err(f)) => f.code,
        Err(_) => fw_result::FW_PANIC,
    }
}

/// The library's version, e.g. `"0.1.0"` (static; never freed).
#[unsafe(no_mangle)]
pub extern "C" fn fw_version() -> *const c_char {
    static VERSION: &CStr = c"0.1.0";
    VERSION.as_ptr()
}

/// Builds an engine from a TOML configuration (NUL-terminated).
///
/// # Safety
/// `toml` is NULL or a NUL-terminated string; `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_from_toml(
    toml: *const c_char,
    out: *mut *mut fw_engine,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { new_engine(toml, "toml", out, Engine::from_toml) }
}

/// Builds an engine from a JSON configuration of the same structure.
///
/// # Safety
/// As `fw_engine_from_toml`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_from_json(
    json: *const c_char,
    out: *mut *mut fw_engine,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { new_engine(json, "json", out, Engine::from_json) }
}

/// Builds an engine from a configuration file (JSON if it ends in `.json`, TOML otherwise).
///
/// # Safety
/// As `fw_engine_from_toml`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_from_file(
    path: *const c_char,
    out: *mut *mut fw_engine,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { new_engine(path, "path", out, |p| Engine::from_file(p)) }
}

/// Frees an engine (NULL does nothing). No other call may be using it.
///
/// # Safety
/// `engine` is NULL or a live handle from this library, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_free(engine: *mut fw_engine) {
    // SAFETY: forwarded contract.
    unsafe { free_handle::<fw_engine, Engine>(engine) }
}

/// Copies the name of rule `index` into `buf`; `out_len` receives its length.
///
/// # Safety
/// `engine` is a live handle; `buf` is NULL or valid for `len` bytes; `out_len` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_rule_name(
    engine: *const fw_engine,
    index: usize,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let engine = unsafe { engine_ref(engine) }?;
        let rule = engine.rules().get(index).ok_or_else(|| {
            failure(
                fw_result::FW_INVALID_ARGUMENT,
                format!("no rule {index}: the engine has {}", engine.rules().len()),
            )
        })?;
        // SAFETY: see the function's contract.
        unsafe { copy_out(rule.name().as_bytes(), buf, len, out_len) }
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
        non_null(out, "out")?;
        // SAFETY: see the function's contract.
        let (engine, request) = unsafe { (engine_ref(engine)?, request_of(request)?) };
        let d = engine.check(&request)?;
        // SAFETY: checked non-null.
        unsafe { *out = decision_of(&d) };
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
        let engine = unsafe { engine_ref(engine) }?;
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
        let parsed: Vec<Request<'_>> = requests
            .iter()
            // SAFETY: each element is a valid request.
            .map(|r| unsafe { request_of(r) })
            .collect::<Result<_, _>>()?;
        for (i, d) in engine.check_many(&parsed).into_iter().enumerate() {
            match d {
                Ok(d) => {
                    out[i] = decision_of(&d);
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
        non_null(out, "out")?;
        non_null(out_headers, "out_headers")?;
        // SAFETY: see the function's contract.
        let (engine, request) = unsafe { (engine_ref(engine)?, request_of(request)?) };
        let d = engine.check(&request)?;
        let headers = HeadersBox(
            d.headers()
                .into_iter()
                .map(|(n, v)| (c_string(n.to_string()), c_string(v)))
                .collect(),
        );
        // SAFETY: checked non-null.
        unsafe {
            *out = decision_of(&d);
            *out_headers = Box::into_raw(Box::new(headers)).cast::<fw_headers>();
        }
        Ok(())
    })
}

/// How many headers there are.
///
/// # Safety
/// `headers` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_headers_len(headers: *const fw_headers, out: *mut usize) -> fw_result {
    guard(|| {
        non_null(headers, "headers")?;
        non_null(out, "out")?;
        // SAFETY: a live handle is a `Box<HeadersBox>`; `out` checked.
        unsafe { *out = (*headers.cast::<HeadersBox>()).0.len() };
        Ok(())
    })
}

/// Header `index`: its name and value, NUL-terminated, owned by `headers`.
///
/// # Safety
/// `headers` is a live handle; `name` and `value` are valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_headers_get(
    headers: *const fw_headers,
    index: usize,
    name: *mut *const c_char,
    value: *mut *const c_char,
) -> fw_result {
    guard(|| {
        non_null(headers, "headers")?;
        non_null(name, "name")?;
        non_null(value, "value")?;
        // SAFETY: a live handle is a `Box<HeadersBox>`.
        let all = unsafe { &*headers.cast::<HeadersBox>() };
        let (n, v) = all.0.get(index).ok_or_else(|| {
            failure(
                fw_result::FW_INVALID_ARGUMENT,
                format!("no header {index}: there are {}", all.0.len()),
            )
        })?;
        // SAFETY: checked non-null.
        unsafe {
            *name = n.as_ptr();
            *value = v.as_ptr();
        }
        Ok(())
    })
}

/// Frees headers (NULL does nothing).
///
/// # Safety
/// `headers` is NULL or a live handle, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_headers_free(headers: *mut fw_headers) {
    // SAFETY: forwarded contract.
    unsafe { free_handle::<fw_headers, HeadersBox>(headers) }
}

fn publish_identity(identity: Arc<Identity>, out: *mut *mut fw_identity) {
    let boxed = IdentityBox {
        subject: c_string(identity.subject.clone()),
        role: identity.role.clone().map(c_string),
        identity,
    };
    // SAFETY: `out` was checked non-null by the caller of this function.
    unsafe { *out = Box::into_raw(Box::new(boxed)).cast::<fw_identity>() };
}

/// Verifies a bearer token (`Authorization` header value). On a rejection the code names the
/// kind, and `fw_last_error_www_authenticate` gives the challenge to send with the 401.
///
/// # Safety
/// `engine` is a live handle; `authorization` a NUL-terminated string; `out` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_authenticate(
    engine: *const fw_engine,
    authorization: *const c_char,
    out: *mut *mut fw_identity,
) -> fw_result {
    guard(|| {
        non_null(out, "out")?;
        // SAFETY: see the function's contract.
        let (engine, header) =
            unsafe { (engine_ref(engine)?, text(authorization, "authorization")?) };
        publish_identity(engine.authenticate(header)?, out);
        Ok(())
    })
}

/// Authenticates, then checks `request` under the identity's subject and role (the request's
/// own subject and role are ignored): one call per request.
///
/// # Safety
/// As `fw_authenticate` and `fw_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_authorize(
    engine: *const fw_engine,
    authorization: *const c_char,
    request: *const fw_request,
    out_identity: *mut *mut fw_identity,
    out: *mut fw_decision,
) -> fw_result {
    guard(|| {
        non_null(out_identity, "out_identity")?;
        non_null(out, "out")?;
        // SAFETY: see the function's contract.
        let (engine, header, request) = unsafe {
            (
                engine_ref(engine)?,
                text(authorization, "authorization")?,
                request_of(request)?,
            )
        };
        let authorized = engine.authorize(header, &request)?;
        // SAFETY: checked non-null.
        unsafe { *out = decision_of(&authorized.decision) };
        publish_identity(authorized.identity, out_identity);
        Ok(())
    })
}

/// The identity's subject (NUL-terminated, owned by `identity`).
///
/// # Safety
/// `identity` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_identity_subject(
    identity: *const fw_identity,
    out: *mut *const c_char,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { read_field(identity, out, |id: &IdentityBox| id.subject.as_ptr()) }
}

/// The identity's role (NUL-terminated, owned by `identity`), or NULL when it has none.
///
/// # Safety
/// `identity` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_identity_role(
    identity: *const fw_identity,
    out: *mut *const c_char,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe {
        read_field(identity, out, |id: &IdentityBox| {
            id.role.as_ref().map_or(std::ptr::null(), |r| r.as_ptr())
        })
    }
}

/// Copies the token's claims, as a JSON object, into `buf`.
///
/// # Safety
/// `identity` is a live handle; `buf` NULL or valid for `len` bytes; `out_len` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_identity_claims_json(
    identity: *const fw_identity,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fw_result {
    guard(|| {
        non_null(identity, "identity")?;
        // SAFETY: a live handle is a `Box<IdentityBox>`.
        let id = unsafe { &*identity.cast::<IdentityBox>() };
        let json = serde_json::to_string(&id.identity.claims).unwrap_or_default();
        // SAFETY: see the function's contract.
        unsafe { copy_out(json.as_bytes(), buf, len, out_len) }
    })
}

/// Frees an identity (NULL does nothing).
///
/// # Safety
/// `identity` is NULL or a live handle, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_identity_free(identity: *mut fw_identity) {
    // SAFETY: forwarded contract.
    unsafe { free_handle::<fw_identity, IdentityBox>(identity) }
}

/// Picks an upstream of `service` for one call.
///
/// # Safety
/// `engine` is a live handle; `service` NUL-terminated; `out` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_pick(
    engine: *const fw_engine,
    service: *const c_char,
    out: *mut *mut fw_lease,
) -> fw_result {
    guard(|| {
        non_null(out, "out")?;
        // SAFETY: see the function's contract.
        let (engine, service) = unsafe { (engine_ref(engine)?, text(service, "service")?) };
        let lease = engine.pick(service)?;
        let boxed = LeaseBox {
            upstream: c_string(lease.upstream().to_owned()),
            url: c_string(lease.url().to_owned()),
            lease,
        };
        // SAFETY: checked non-null.
        unsafe { *out = Box::into_raw(Box::new(boxed)).cast::<fw_lease>() };
        Ok(())
    })
}

/// The lease's upstream name (NUL-terminated, owned by `lease`).
///
/// # Safety
/// `lease` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_lease_upstream(
    lease: *const fw_lease,
    out: *mut *const c_char,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { read_field(lease, out, |l: &LeaseBox| l.upstream.as_ptr()) }
}

/// The lease's upstream URL (NUL-terminated, owned by `lease`).
///
/// # Safety
/// `lease` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_lease_url(
    lease: *const fw_lease,
    out: *mut *const c_char,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { read_field(lease, out, |l: &LeaseBox| l.url.as_ptr()) }
}

/// Records how the call ended and how long it took (µs), and frees the lease. The lease is
/// consumed even when the outcome is invalid (then counted as a failure).
///
/// # Safety
/// `lease` is NULL or a live handle, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_lease_finish(
    lease: *mut fw_lease,
    outcome: u32,
    latency_us: u64,
) -> fw_result {
    guard(|| {
        non_null(lease, "lease")?;
        // SAFETY: a live handle is a leaked `Box<LeaseBox>`, consumed here.
        let boxed = unsafe { Box::from_raw(lease.cast::<LeaseBox>()) };
        let outcome = match outcome {
            0 => CallOutcome::Success,
            1 => CallOutcome::Failure,
            2 => CallOutcome::Timeout,
            other => {
                drop(boxed);
                return Err(failure(
                    fw_result::FW_INVALID_ARGUMENT,
                    format!("outcome {other} is not an fw_outcome; counted as a failure"),
                ));
            }
        };
        boxed
            .lease
            .finish(outcome, Duration::from_micros(latency_us));
        Ok(())
    })
}

/// Frees a lease without finishing it: the call counts as a failure (NULL does nothing).
///
/// # Safety
/// `lease` is NULL or a live handle, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_lease_free(lease: *mut fw_lease) {
    // SAFETY: forwarded contract.
    unsafe { free_handle::<fw_lease, LeaseBox>(lease) }
}

/// Copies the state of `service`'s upstreams into `buf` as a JSON array: per upstream its
/// `name`, `url`, `weight`, `down`, breaker `state` (`closed`, `open`, `half_open`) and
/// `open_until_ms` (when open), `in_flight`, the breaker window's `failure_rate` and
/// `slow_call_rate`, and `calls`, `successes`, `failures`, `timeouts`, `mean_latency_us`,
/// `max_latency_us`.
///
/// # Safety
/// `engine` is a live handle; `service` NUL-terminated; `buf` NULL or valid for `len` bytes;
/// `out_len` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_upstreams_json(
    engine: *const fw_engine,
    service: *const c_char,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (engine, service) = unsafe { (engine_ref(engine)?, text(service, "service")?) };
        let upstreams: Vec<serde_json::Value> = engine
            .upstreams(service)?
            .iter()
            .map(UpstreamStatus::to_json)
            .collect();
        let json = serde_json::Value::Array(upstreams).to_string();
        // SAFETY: see the function's contract.
        unsafe { copy_out(json.as_bytes(), buf, len, out_len) }
    })
}

/// Hands a new string to the caller through `out` (and its length, without the NUL, through
/// `out_len` when that is not NULL). `out` was checked non-null.
///
/// # Safety
/// `out` is valid for a write; `out_len` is NULL or valid for a write.
unsafe fn give_string(text: String, out: *mut *mut c_char, out_len: *mut usize) {
    let text = c_string(text);
    let len = text.as_bytes().len();
    // SAFETY: see the function's contract.
    unsafe {
        if !out_len.is_null() {
            *out_len = len;
        }
        *out = text.into_raw();
    }
}

/// The engine's monitoring report as JSON, in a new string the caller frees with
/// `fw_string_free`; its length (without the NUL) goes to `out_len` unless that is NULL.
///
/// The report (the same document in every binding, keys in snake_case): `generated_at_ms`,
/// `horizon_minutes`, `source` (`memory`), `store_kind`, `store_failure` (null when healthy),
/// `per_minute` (each minute of the horizon that saw traffic, oldest first) and `peaks` (the
/// busiest minutes) — each minute `start_ms`, `requests`, `admitted`, `rate_limited`,
/// `auth_rejected`, `failed`, `upstream_calls`, `upstream_failures`, `breaker_trips`,
/// `responses`, `client_errors`, `server_errors`, `latency_p50_us`, `latency_p99_us`,
/// `mean_latency_us`, `max_latency_us` —, `totals` (the same counters since the engine
/// started), the top lists `top_endpoints`, `breaches_by_subject`, `breaches_by_role`,
/// `breaches_by_endpoint`, `breaches_by_rule`, `upstream_failures`, `breaker_trips` (each
/// entry `key`, `count`, `error`), the counts by name `auth_rejections`, `errors`, `stores`,
/// `status_classes`, the histogram `response_latency` (`bounds_us`, `counts`, `sum_us`,
/// `count`) and `sink` (null without a Redis Streams sink).
///
/// `now_ms` (ms since the Unix epoch) is when the per-minute series ends; a negative value
/// means the engine's clock. Computing a report merges the aggregate's shards: call it for a
/// dashboard or a scrape, not per request.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_report_json(
    engine: *const fw_engine,
    now_ms: i64,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    guard(|| {
        non_null(out, "out")?;
        // SAFETY: see the function's contract.
        let engine = unsafe { engine_ref(engine) }?;
        let report = if now_ms >= 0 {
            engine.report_at(Timestamp::from_millis(now_ms as u64))
        } else {
            engine.report()
        };
        // SAFETY: see the function's contract.
        unsafe { give_string(report.to_json(), out, out_len) };
        Ok(())
    })
}

/// The engine's counters and its upstreams' state in the Prometheus text format (version
/// 0.0.4: serve it with `Content-Type: text/plain; version=0.0.4; charset=utf-8`), in a new
/// string the caller frees with `fw_string_free`; its length (without the NUL) goes to
/// `out_len` unless that is NULL.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_prometheus(
    engine: *const fw_engine,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    guard(|| {
        non_null(out, "out")?;
        // SAFETY: see the function's contract.
        let engine = unsafe { engine_ref(engine) }?;
        let text = engine.prometheus();
        // SAFETY: see the function's contract.
        unsafe { give_string(text, out, out_len) };
        Ok(())
    })
}

/// Frees a string from `fw_report_json` or `fw_prometheus` (NULL does nothing). The caller
/// may read the string and write within it, but must not change its length.
///
/// # Safety
/// `text` is NULL or a string from this library's `fw_report_json` or `fw_prometheus`, freed
/// once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_string_free(text: *mut c_char) {
    let _ = guard(|| {
        if !text.is_null() {
            // SAFETY: such a string is a `CString` given away by `give_string`.
            drop(unsafe { CString::from_raw(text) });
        }
        Ok(())
    });
}

/// Records how the host answered a request, for the report's response counts, status
/// classes and latency percentiles: `status` (100 to 999) and `latency_us`, the time from the
/// request's arrival to its answer in microseconds. `path`'s query string is ignored; the
/// time of the answer is the engine's clock. Cheap enough for every request (one short lock).
///
/// # Safety
/// `engine` is a live handle; `method` and `path` are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_record_response(
    engine: *const fw_engine,
    method: *const c_char,
    path: *const c_char,
    status: u32,
    latency_us: u64,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (engine, method, path) = unsafe {
            (
                engine_ref(engine)?,
                text(method, "method")?,
                text(path, "path")?,
            )
        };
        let status = u16::try_from(status)
            .ok()
            .filter(|s| floodwall_core::monitor::HTTP_STATUSES.contains(s))
            .ok_or_else(|| {
                failure(
                    fw_result::FW_INVALID_ARGUMENT,
                    format!("status {status} is not an HTTP status (100 to 999)"),
                )
            })?;
        engine.record_response(method, path, status, Duration::from_micros(latency_us));
        Ok(())
    })
}

/// Copies the message of the last failed call on this thread into `buf` (`FW_OK` with an
/// empty string when there was none).
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes; `out_len` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { copy_last_error(buf, len, out_len, |(message, _)| Some(message)) }
}

/// Copies the `WWW-Authenticate` value of the last failed authentication on this thread into
/// `buf` (an empty string when the last failure was not an authentication rejection).
///
/// # Safety
/// As `fw_last_error_message`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_last_error_www_authenticate(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { copy_last_error(buf, len, out_len, |(_, challenge)| challenge.as_ref()) }
}

/// Keeps the rule of `decision_of` that every `fw_store` value has a core counterpart.
const _: () = {
    let _ = fw_store::FW_STORE_UNAVAILABLE;
    let _ = fw_outcome::FW_OUTCOME_TIMEOUT;
};

#[cfg(test)]
mod tests {
    use super::{ErrorKind, fw_result};

    /// The mapping needs a wildcard arm (the core's `ErrorKind` is non-exhaustive); this keeps it
    /// from ever being taken by a kind the core has: a new kind without its own code fails here.
    #[test]
    fn every_core_error_kind_has_its_own_code() {
        let mut codes: Vec<u32> = ErrorKind::ALL
            .iter()
            .map(|&k| fw_result::of(k) as u32)
            .collect();
        assert!(
            !codes.contains(&(fw_result::FW_UNKNOWN_ERROR as u32)),
            "{codes:?}"
        );
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len(), "two kinds share a code");
    }
}
