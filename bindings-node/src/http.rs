//! The HTTP layer ([`floodwall::http`]) for the Express middlewares, through raw Node-API as
//! the other hot functions are (see `fastpath.rs`).
//!
//! [`functions`] binds four functions to an engine and a snapshot of the header names the
//! layer reads (taken again after `setAccessLists`):
//!
//! - `httpSync(out, method, target, peer, cost, stage, subject, role, afterAuth, values,
//!   maxWait)`:
//!   `values` are the request's values of those header names, in their order (`undefined` for
//!   absent ones, repeated lines joined by `,`); the verdict goes into `out` (layout below) and
//!   the function answers `[exchange, identity | body, ...strings]`, or `undefined` for a skip.
//!   `maxWait` (ms, or absent) is how long the middleware may still wait for capacity: a 429
//!   within it is not recorded and says in `[4]` how long to wait before asking again.
//! - `httpAsync(...)`: the same arguments but `out`, decided on a worker thread (a Redis
//!   store); the Promise resolves to the answer with the verdict's numbers prepended as a
//!   `Float64Array`.
//! - `finishSync(exchange, status, skipRecording, values)` and `finishAsync(...)` (on a worker
//!   thread, nothing to await): `values` are the response's values of the response header
//!   names. A request that reaches `httpAsync` after a `finishAsync` is decided after that
//!   finish (its refunds and charges) is done, waiting at most [`FINISH_WAIT`]: a client's
//!   next request sees what its last response gave back, as it would on the memory store.
//!
//! `out` (and the prepended array): `[0]` verdict (0 skip, 1 pass, 2 refuse), `[1]` the
//! refusal's status, `[2]` flags (1: an identity, 2: finishing touches the shared store), `[3]`
//! `n`, the headers the answer lists, `[4]` on a refusal the ms to wait before asking again
//! (-1: answer it); on a pass `[4..4+n]` are their names' indices in
//! [`RATE_LIMIT_HEADERS`] and the answer's strings are their values, and the decision's row
//! (`decision.rs`) starts at [`ROW`]; on a refusal the strings are `n` name and value pairs.
//! The exchange is an external value the JS side hands back to `finish`; dropped unfinished
//! (the client went away), nothing is recorded.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::null_mut;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use floodwall::http::{Exchange, HeaderLookup, HttpRequest, HttpStage, HttpVerdict};
use floodwall::{Engine, Identity};
use napi::JsValue;
use napi::bindgen_prelude::ToNapiValue;
use napi::sys;
use parking_lot::Mutex;

use crate::decision::{self, decision_len};
use crate::fastpath::{
    Failure, INLINE, absent, arguments, bound_function, float64_out, identity_array, js_text,
    number, settle, text,
};
use crate::pool;

/// Where the decision's row starts in `out`.
pub(crate) const ROW: usize = 16;

/// The names of the headers a pass adds, in the order core renders them.
pub(crate) const RATE_LIMIT_HEADERS: [&str; 6] = [
    "RateLimit-Policy",
    "RateLimit",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Retry-After",
];

/// An engine with the header names its HTTP layer reads, as of one moment.
pub(crate) struct Binding {
    engine: Arc<Engine>,
    names: Box<[Box<str>]>,
    response_names: Box<[Box<str>]>,
    finishing: Finishing,
}

/// The longest a decision waits for the finishes started before it.
const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The `finishAsync` calls under way, numbered in the order the JS thread made them. A request
/// with none under way reads two atomics and takes no lock.
#[derive(Default)]
struct Finishing {
    /// The number of the last finish started (given on the JS thread only).
    started: AtomicU64,
    /// Every finish up to this number is done.
    through: AtomicU64,
    /// The finishes done past `through`, waiting for an earlier one.
    ahead: parking_lot::Mutex<std::collections::BTreeSet<u64>>,
    done: parking_lot::Condvar,
}

impl Finishing {
    /// Numbers a finish about to start.
    fn start(&self) -> u64 {
        self.started.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The number of the last finish started.
    fn started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    /// Marks finish `n` done.
    fn end(&self, n: u64) {
        let mut ahead = self.ahead.lock();
        ahead.insert(n);
        let mut through = self.through.load(Ordering::Acquire);
        while ahead.remove(&(through + 1)) {
            through += 1;
        }
        self.through.store(through, Ordering::Release);
        drop(ahead);
        self.done.notify_all();
    }

    /// Waits until every finish up to `n` is done, at most [`FINISH_WAIT`].
    fn wait_for(&self, n: u64) {
        if self.through.load(Ordering::Acquire) >= n {
            return;
        }
        let deadline = std::time::Instant::now() + FINISH_WAIT;
        let mut ahead = self.ahead.lock();
        while self.through.load(Ordering::Acquire) < n {
            if self.done.wait_until(&mut ahead, deadline).timed_out() {
                return;
            }
        }
    }
}

/// The four functions over `engine` and its current header names, and the names:
/// `[names, responseNames, httpSync, httpAsync, finishSync, finishAsync]`.
pub(crate) fn functions<'env>(
    env: &'env napi::Env,
    engine: Arc<Engine>,
) -> napi::Result<Vec<napi::bindgen_prelude::Unknown<'env>>> {
    let binding = Arc::new(Binding {
        names: engine
            .http_headers()
            .into_iter()
            .map(String::into_boxed_str)
            .collect(),
        response_names: engine
            .http_response_headers()
            .into_iter()
            .map(String::into_boxed_str)
            .collect(),
        engine,
        finishing: Finishing::default(),
    });
    let list = |names: &[Box<str>]| -> napi::Result<napi::bindgen_prelude::Unknown<'env>> {
        let names: Vec<&str> = names.iter().map(|n| &**n).collect();
        // SAFETY: a value made on this env just now.
        unsafe {
            let value = Vec::<&str>::to_napi_value(env.raw(), names)?;
            Ok(napi::bindgen_prelude::Unknown::from_raw_unchecked(
                env.raw(),
                value,
            ))
        }
    };
    Ok(vec![
        list(&binding.names)?,
        list(&binding.response_names)?,
        bound_function(env, Arc::clone(&binding), c"httpSync", http_sync)?,
        bound_function(env, Arc::clone(&binding), c"httpAsync", http_async)?,
        bound_function(env, Arc::clone(&binding), c"finishSync", finish_sync)?,
        bound_function(env, binding, c"finishAsync", finish_async)?,
    ])
}

/// Header values given in the order of a binding's names.
struct Aligned<'a> {
    names: &'a [Box<str>],
    values: &'a [Option<String>],
}

impl HeaderLookup for Aligned<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        let i = self.names.iter().position(|n| **n == *name)?;
        self.values.get(i)?.as_deref()
    }
}

/// A request's arguments, owned (so that a worker thread can decide it).
struct Asked {
    method: String,
    target: String,
    peer: Option<String>,
    cost: f64,
    stage: HttpStage,
    subject: Option<String>,
    role: Option<String>,
    after_authenticate: bool,
    values: Vec<Option<String>>,
    /// How long the host may still wait for capacity.
    may_wait: std::time::Duration,
}

/// An exchange the JS side holds until it finishes it.
struct Held(Mutex<Option<Exchange>>);

/// What a verdict hands back to JS, owned.
enum Answer {
    Skip,
    Pass {
        exchange: Exchange,
        identity: Option<Arc<Identity>>,
        /// (name index, value) of each header to add.
        headers: Vec<(usize, String)>,
        row: Vec<f64>,
    },
    Refuse {
        exchange: Exchange,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
        /// For a refusal the host may wait out: how long, in ms.
        retry_in: Option<f64>,
    },
}

/// Reads the arguments after `out`: method, target, peer, cost, stage, subject, role,
/// afterAuth, values, maxWait.
///
/// # Safety
/// `env` is the live env of the current call; each value null or one of its handles.
unsafe fn read(env: sys::napi_env, argv: &[sys::napi_value]) -> Result<Asked, Failure> {
    let owned = |value: sys::napi_value, what: &str| -> Result<Option<String>, Failure> {
        let mut buffer = [const { MaybeUninit::<u8>::uninit() }; INLINE];
        let mut heap = Vec::new();
        // SAFETY: live handles of this call (or null).
        unsafe { text(env, value, &mut buffer, &mut heap, what) }.map(|t| t.map(str::to_owned))
    };
    let required = |value, what: &str| {
        owned(value, what)?.ok_or_else(|| Failure::Argument(format!("{what} must be a string")))
    };
    // SAFETY (the reads below): live handles of this call (or null).
    let cost = if argv[3].is_null() {
        1.0
    } else {
        unsafe { number(env, argv[3], "cost") }?
    };
    let stage = match unsafe { number(env, argv[4], "stage") }? as u32 {
        0 => HttpStage::Guard,
        1 => HttpStage::Authenticate,
        2 => HttpStage::RateLimit,
        other => return Err(Failure::Argument(format!("stage {other} is not 0, 1 or 2"))),
    };
    let after_authenticate =
        !argv[7].is_null() && unsafe { number(env, argv[7], "afterAuth") }? != 0.0;
    let values = unsafe { strings(env, argv[8]) }?;
    let may_wait = if argv[9].is_null() || unsafe { absent(env, argv[9]) } {
        std::time::Duration::ZERO
    } else {
        let ms = unsafe { number(env, argv[9], "maxWait") }?;
        if !(ms.is_finite() && ms >= 0.0) {
            return Err(Failure::Argument(format!(
                "maxWait must be a number of milliseconds, 0 or more (got {ms})"
            )));
        }
        std::time::Duration::from_secs_f64(ms.min(1e12) / 1000.0)
    };
    Ok(Asked {
        method: required(argv[0], "method")?,
        target: required(argv[1], "target")?,
        peer: owned(argv[2], "peer")?,
        cost,
        stage,
        subject: owned(argv[5], "subject")?,
        role: owned(argv[6], "role")?,
        after_authenticate,
        values,
        may_wait,
    })
}

/// An array of strings (or `undefined`/`null` holes).
///
/// # Safety
/// `env` is the live env of the current call; `value` null or one of its handles.
unsafe fn strings(
    env: sys::napi_env,
    value: sys::napi_value,
) -> Result<Vec<Option<String>>, Failure> {
    // SAFETY: a live handle of this call.
    if value.is_null() || unsafe { absent(env, value) } {
        return Ok(Vec::new());
    }
    let mut length = 0u32;
    // SAFETY: a live handle; a value that is no array gives an error status.
    if unsafe { sys::napi_get_array_length(env, value, &mut length) } != sys::Status::napi_ok {
        return Err(Failure::Argument("values must be an array".to_owned()));
    }
    let mut out = Vec::with_capacity(length as usize);
    for i in 0..length {
        let mut item = null_mut();
        let mut buffer = [const { MaybeUninit::<u8>::uninit() }; INLINE];
        let mut heap = Vec::new();
        // SAFETY: `i` is below the array's length.
        unsafe { sys::napi_get_element(env, value, i, &mut item) };
        // SAFETY: a live handle of this call.
        let text = unsafe { text(env, item, &mut buffer, &mut heap, "a header value") }?;
        out.push(text.map(str::to_owned));
    }
    Ok(out)
}

impl Binding {
    /// The HTTP layer's verdict on `asked`, owned.
    fn decide(&self, asked: &Asked) -> Answer {
        let headers = Aligned {
            names: &self.names,
            values: &asked.values,
        };
        let mut request = HttpRequest::new(&asked.method, &asked.target, &headers)
            .cost(asked.cost)
            .stage(asked.stage)
            .may_wait(asked.may_wait);
        if let Some(peer) = &asked.peer {
            request = request.peer(peer);
        }
        if let Some(subject) = &asked.subject {
            request = request.caller(subject, asked.role.as_deref());
        }
        if asked.after_authenticate {
            request = request.after_authenticate();
        }
        match self.engine.http(&request) {
            HttpVerdict::Skip => Answer::Skip,
            HttpVerdict::Pass(mut admission) => Answer::Pass {
                headers: admission
                    .headers()
                    .into_iter()
                    .map(|(name, value)| {
                        let index = RATE_LIMIT_HEADERS.iter().position(|n| *n == name);
                        (index.unwrap_or(0), value)
                    })
                    .collect(),
                row: decision::to_vec(&mut admission.decision),
                identity: admission.identity,
                exchange: admission.exchange,
            },
            HttpVerdict::Refuse(refusal) => Answer::Refuse {
                status: refusal.response.status,
                headers: refusal.response.headers,
                body: refusal.response.body,
                exchange: refusal.exchange,
                retry_in: refusal.retry_in.map(|d| d.as_secs_f64() * 1000.0),
            },
        }
    }
}

/// An external value holding `value`, dropped when it is collected.
///
/// # Safety
/// `env` is the live env of the current call.
unsafe fn external<T: 'static>(env: sys::napi_env, value: T) -> sys::napi_value {
    unsafe extern "C" fn drop_box<T>(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
        // SAFETY: `data` came from `Box::into_raw` below, released exactly once.
        drop(unsafe { Box::from_raw(data.cast::<T>()) });
    }
    let data = Box::into_raw(Box::new(value)).cast::<c_void>();
    let mut out = null_mut();
    // SAFETY: `data` stays valid until the finalizer releases it.
    unsafe { sys::napi_create_external(env, data, Some(drop_box::<T>), null_mut(), &mut out) };
    out
}

/// Writes `answer`'s numbers into `meta` (which holds at least [`ROW`] numbers, and the row
/// after them on a pass) and answers its JS array.
///
/// # Safety
/// `env` is the live env of the current call.
unsafe fn answer(
    env: sys::napi_env,
    answer: Answer,
    meta: &mut [f64],
) -> Result<sys::napi_value, Failure> {
    // SAFETY (below): values made on the live env of this call.
    unsafe {
        let mut array = null_mut();
        sys::napi_create_array(env, &mut array);
        let mut at = 0;
        let mut push = |value: sys::napi_value| {
            sys::napi_set_element(env, array, at, value);
            at += 1;
        };
        match answer {
            Answer::Skip => {
                meta[0] = 0.0;
                let mut undefined = null_mut();
                sys::napi_get_undefined(env, &mut undefined);
                return Ok(undefined);
            }
            Answer::Pass {
                exchange,
                identity,
                headers,
                row,
            } => {
                if meta.len() < ROW + row.len() {
                    return Err(Failure::Argument(format!(
                        "out holds {} numbers; this decision needs {}",
                        meta.len(),
                        ROW + row.len()
                    )));
                }
                meta[0] = 1.0;
                meta[1] = 0.0;
                meta[2] = f64::from(u8::from(identity.is_some()))
                    + if exchange.touches_shared_store() {
                        2.0
                    } else {
                        0.0
                    };
                meta[3] = headers.len() as f64;
                meta[ROW..ROW + row.len()].copy_from_slice(&row);
                push(external(env, Held(Mutex::new(Some(exchange)))));
                match &identity {
                    Some(identity) => push(identity_array(env, identity)),
                    None => push(js_text(env, None)),
                }
                for (i, (name, value)) in headers.iter().enumerate() {
                    meta[4 + i] = *name as f64;
                    push(js_text(env, Some(value)));
                }
            }
            Answer::Refuse {
                exchange,
                status,
                headers,
                body,
                retry_in,
            } => {
                meta[0] = 2.0;
                meta[4] = retry_in.unwrap_or(-1.0);
                meta[1] = f64::from(status);
                meta[2] = if exchange.touches_shared_store() {
                    2.0
                } else {
                    0.0
                };
                meta[3] = headers.len() as f64;
                push(external(env, Held(Mutex::new(Some(exchange)))));
                push(js_text(env, Some(&body)));
                for (name, value) in &headers {
                    push(js_text(env, Some(name)));
                    push(js_text(env, Some(value)));
                }
            }
        }
        Ok(array)
    }
}

unsafe extern "C" fn http_sync(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Node-API calls this with a live `env` and `info`; `data` is the binding
        // `bound_function` bound, alive while the function is.
        unsafe {
            let (argv, data) = arguments::<11>(env, info);
            let binding = &*data.cast_const().cast::<Binding>();
            let out = float64_out(env, argv[0])?;
            if out.len() < decision_len(0) + ROW {
                return Err(Failure::Argument("out is too short".to_owned()));
            }
            let asked = read(env, &argv[1..])?;
            answer(env, binding.decide(&asked), out)
        }
    }));
    // SAFETY: the live `env` of this call.
    unsafe { settle(env, outcome) }
}

/// The answer of a worker thread's decision, made into JS on the JS thread.
struct Resolved(Answer);

impl ToNapiValue for Resolved {
    unsafe fn to_napi_value(env: sys::napi_env, value: Self) -> napi::Result<sys::napi_value> {
        let rows = match &value.0 {
            Answer::Pass { row, .. } => row.len(),
            _ => 0,
        };
        let mut meta = vec![0.0; ROW + rows];
        // SAFETY: on the JS thread, in the deferred's resolution.
        let array = unsafe { answer(env, value.0, &mut meta) }
            .map_err(|_| napi::Error::from_reason("a decision that does not fit"))?;
        // SAFETY: values made on this env.
        unsafe {
            let numbers = napi::bindgen_prelude::Float64Array::new(meta);
            let numbers = napi::bindgen_prelude::Float64Array::to_napi_value(env, numbers)?;
            let mut out = null_mut();
            sys::napi_create_array(env, &mut out);
            sys::napi_set_element(env, out, 0, numbers);
            let mut undefined = null_mut();
            sys::napi_get_undefined(env, &mut undefined);
            if array != undefined {
                let mut length = 0u32;
                sys::napi_get_array_length(env, array, &mut length);
                for i in 0..length {
                    let mut item = null_mut();
                    sys::napi_get_element(env, array, i, &mut item);
                    sys::napi_set_element(env, out, i + 1, item);
                }
            }
            Ok(out)
        }
    }
}

unsafe extern "C" fn http_async(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `http_sync`.
        unsafe {
            let (argv, data) = arguments::<10>(env, info);
            let binding = Arc::clone(&*std::mem::ManuallyDrop::new(Arc::from_raw(
                data.cast_const().cast::<Binding>(),
            )));
            let asked = read(env, &argv)?;
            let js = napi::Env::from_raw(env);
            let (deferred, promise) = js
                .create_deferred::<Resolved, _>()
                .map_err(|e| Failure::Argument(e.to_string()))?;
            // After every finish the JS thread started before this request.
            let after = binding.finishing.started();
            pool::spawn(move || {
                binding.finishing.wait_for(after);
                let answer = binding.decide(&asked);
                deferred.resolve(move |_| Ok(Resolved(answer)));
            });
            Ok(promise.raw())
        }
    }));
    // SAFETY: the live `env` of this call.
    unsafe { settle(env, outcome) }
}

/// The exchange of a `finish` call, taken out of its holder; `None` when already finished.
///
/// # Safety
/// `env` is the live env of the current call; `value` null or one of its handles.
unsafe fn take(env: sys::napi_env, value: sys::napi_value) -> Result<Option<Exchange>, Failure> {
    let mut data = null_mut();
    // SAFETY: a value that is not an external gives an error status.
    if value.is_null()
        || unsafe { sys::napi_get_value_external(env, value, &mut data) } != sys::Status::napi_ok
        || data.is_null()
    {
        return Err(Failure::Argument(
            "exchange must be the value http answered".to_owned(),
        ));
    }
    // SAFETY: externals reaching `finish` are the `Held` values `answer` made (the JS layer
    // never hands another).
    let held = unsafe { &*data.cast_const().cast::<Held>() };
    Ok(held.0.lock().take())
}

/// What a `finish` call is given: the binding, the exchange, the status, the response's
/// header values.
type Finish = (Arc<Binding>, Exchange, u16, Vec<Option<String>>);

/// Reads `(exchange, status, skipRecording, values)`.
///
/// # Safety
/// Node-API's contract for a callback: live `env` and `info`.
unsafe fn finish_args(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Result<Option<Finish>, Failure> {
    // SAFETY: see the function's contract; `data` is the bound binding.
    unsafe {
        let (argv, data) = arguments::<4>(env, info);
        let binding = Arc::clone(&*std::mem::ManuallyDrop::new(Arc::from_raw(
            data.cast_const().cast::<Binding>(),
        )));
        let Some(mut exchange) = take(env, argv[0])? else {
            return Err(Failure::Argument(
                "the exchange is finished already".to_owned(),
            ));
        };
        let status = number(env, argv[1], "status")?;
        let code = status as u16;
        if !(status.fract() == 0.0
            && f64::from(code) == status
            && floodwall::monitor::HTTP_STATUSES.contains(&code))
        {
            return Err(Failure::Argument(format!(
                "status must be an HTTP status, an integer from 100 to 999, not {status}"
            )));
        }
        if !argv[2].is_null() && number(env, argv[2], "skipRecording")? != 0.0 {
            exchange.skip_recording();
        }
        let values = strings(env, argv[3])?;
        Ok(Some((binding, exchange, code, values)))
    }
}

impl Binding {
    fn finish(&self, exchange: Exchange, status: u16, values: &[Option<String>]) {
        let headers = Aligned {
            names: &self.response_names,
            values,
        };
        self.engine.http_finish(exchange, status, &headers);
    }
}

unsafe extern "C" fn finish_sync(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Node-API calls this with a live `env` and `info`.
        if let Some((binding, exchange, status, values)) = unsafe { finish_args(env, info) }? {
            binding.finish(exchange, status, &values);
        }
        Ok(null_mut())
    }));
    // SAFETY: the live `env` of this call.
    unsafe { settle(env, outcome) }
}

unsafe extern "C" fn finish_async(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Node-API calls this with a live `env` and `info`.
        if let Some((binding, exchange, status, values)) = unsafe { finish_args(env, info) }? {
            let n = binding.finishing.start();
            pool::spawn(move || {
                // Marked done even if the finish panics, so that no decision waits on it.
                struct Ended<'a>(&'a Finishing, u64);
                impl Drop for Ended<'_> {
                    fn drop(&mut self) {
                        self.0.end(self.1);
                    }
                }
                let _ended = Ended(&binding.finishing, n);
                binding.finish(exchange, status, &values);
            });
        }
        Ok(null_mut())
    }));
    // SAFETY: the live `env` of this call.
    unsafe { settle(env, outcome) }
}
