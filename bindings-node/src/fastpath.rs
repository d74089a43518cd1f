//! `checkSync` through raw Node-API: the call a server makes on every request.
//!
//! napi-rs's generated glue — borrow scopes, a type check and a copied `String` per argument,
//! an `External` lookup — cost ≈ 400 ns per `checkSync`, more than the decision. This module
//! defines the same function by hand: [`check_function`] gives each engine a JS function whose
//! callback data is the engine itself (released when the function is collected), strings are
//! read into stack buffers, and the decision is written into the caller's `Float64Array` (the
//! layout of [`crate::decision`]). Errors are thrown as the rest of the addon throws them: a
//! `TypeError` for a bad argument, an error whose message is the core error's JSON otherwise.

#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_void};
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::null_mut;
use std::sync::Arc;

use floodwall::clock::duration_from_millis;
use floodwall::monitor::HTTP_STATUSES;
use floodwall::{Request, Timestamp};
use napi::sys;

use crate::decision::{self, decision_len};
use crate::error::to_napi;

/// Positional arguments: out, subject, role, method, path, ip, cost, nowMs, headers.
const ARGS: usize = 9;
/// Strings up to this many bytes are read without allocating.
pub(crate) const INLINE: usize = 256;
/// Bearer tokens are longer: up to this many bytes are read without allocating.
const INLINE_TOKEN: usize = 2048;

/// A JS function `(out, subject, role, method, path, ip, cost, nowMs, headers) => void`
/// deciding on `engine`.
pub(crate) fn check_function(
    env: &napi::Env,
    engine: Arc<floodwall::Engine>,
) -> napi::Result<napi::bindgen_prelude::Unknown<'_>> {
    bound_function(env, engine, c"checkSync", check_sync)
}

/// A JS function taking [`check_function`]'s arguments, reading them as it does (refusing
/// what it refuses) and deciding nothing: the cost of crossing into the addon with a request,
/// the floor under `checkSync` that benchmarks measure it against.
pub(crate) fn crossing_function(
    env: &napi::Env,
    engine: Arc<floodwall::Engine>,
) -> napi::Result<napi::bindgen_prelude::Unknown<'_>> {
    bound_function(env, engine, c"crossing", crossing)
}

/// A JS function `(authorization, nowMs) => [subject, role, keyId, algorithm, expiresAtMs]`
/// verifying tokens on `engine` (`null` for what the token lacks).
pub(crate) fn authenticate_function(
    env: &napi::Env,
    engine: Arc<floodwall::Engine>,
) -> napi::Result<napi::bindgen_prelude::Unknown<'_>> {
    bound_function(env, engine, c"authenticate", authenticate)
}

/// A JS function `(out, authorization, method, path, ip, cost, nowMs, headers) =>
/// [subject, role, keyId, algorithm, expiresAtMs]` authenticating and deciding on `engine`, the
/// decision written into `out`.
pub(crate) fn authorize_function(
    env: &napi::Env,
    engine: Arc<floodwall::Engine>,
) -> napi::Result<napi::bindgen_prelude::Unknown<'_>> {
    bound_function(env, engine, c"authorizeSync", authorize_sync)
}

/// A JS function `(method, path, status, latencyMs) => void` recording a response on
/// `engine`, called by the Express middlewares once per response: ≈ 140 ns a call, where the
/// same call as a napi-rs class method (two copied `String`s, the `this` lookup) took ≈ 420 ns
/// (release builds, a loop of 10⁶ calls from `node`, best of 5).
pub(crate) fn record_response_function(
    env: &napi::Env,
    engine: Arc<floodwall::Engine>,
) -> napi::Result<napi::bindgen_prelude::Unknown<'_>> {
    bound_function(env, engine, c"recordResponse", record_response)
}

/// A JS function calling `callback` with `engine` as its data, which is released when the
/// function is collected.
pub(crate) fn bound_function<'env, T: Send + Sync + 'static>(
    env: &'env napi::Env,
    engine: Arc<T>,
    name: &std::ffi::CStr,
    callback: unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value,
) -> napi::Result<napi::bindgen_prelude::Unknown<'env>> {
    let js_env = env;
    let env = js_env.raw();
    let data = Arc::into_raw(engine).cast_mut().cast::<c_void>();
    let mut function = null_mut();
    // SAFETY: `env` is the live environment of the calling JS thread; the name is a valid C
    // string of the given length; `data` stays valid until the finalizer below releases it.
    unsafe {
        let status = sys::napi_create_function(
            env,
            name.as_ptr(),
            name.to_bytes().len() as isize,
            Some(callback),
            data,
            &mut function,
        );
        let status = if status == sys::Status::napi_ok {
            sys::napi_add_finalizer(
                env,
                function,
                data,
                Some(release::<T>),
                null_mut(),
                null_mut(),
            )
        } else {
            status
        };
        if status != sys::Status::napi_ok {
            release::<T>(env, data, null_mut());
            return Err(napi::Error::new(
                napi::Status::GenericFailure,
                "could not create a native function",
            ));
        }
    }
    // SAFETY: `function` is a live function value created on this env just now.
    Ok(unsafe { napi::bindgen_prelude::Unknown::from_raw_unchecked(env, function) })
}

unsafe extern "C" fn release<T>(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` came from `Arc::into_raw` in `bound_function`, released exactly once.
    drop(unsafe { Arc::from_raw(data.cast_const().cast::<T>()) });
}

pub(crate) enum Failure {
    /// A bad argument: a `TypeError`.
    Argument(String),
    /// A core error: its JSON, as `crate::error` writes it.
    Core(String),
}

/// Whether `value` is `undefined` or `null` (asked only when a read failed: `napi_typeof`
/// tests a value against every type in turn, which costs more than the read).
///
/// # Safety
/// `env` and `value` are live handles of the current call.
pub(crate) unsafe fn absent(env: sys::napi_env, value: sys::napi_value) -> bool {
    let mut kind = 0;
    // SAFETY: see the function's contract.
    unsafe { sys::napi_typeof(env, value, &mut kind) };
    matches!(
        kind,
        sys::ValueType::napi_undefined | sys::ValueType::napi_null
    )
}

/// A string argument read into `buffer` (or onto the heap when longer); `None` for
/// `undefined`, `null` or an argument not passed (`value` null).
///
/// # Safety
/// `env` is the live env of the current call and `value` null or one of its handles.
pub(crate) unsafe fn text<'a>(
    env: sys::napi_env,
    value: sys::napi_value,
    buffer: &'a mut [MaybeUninit<u8>],
    heap: &'a mut Vec<u8>,
    what: &str,
) -> Result<Option<&'a str>, Failure> {
    if value.is_null() {
        return Ok(None);
    }
    let mut written = 0usize;
    let inline = buffer.len();
    // SAFETY: the buffer holds `inline` bytes; Node-API writes at most inline - 1 and a NUL,
    // or nothing and an error status when `value` is not a string.
    let status = unsafe {
        sys::napi_get_value_string_utf8(
            env,
            value,
            buffer.as_mut_ptr().cast::<c_char>(),
            inline,
            &mut written,
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: see the function's contract.
        return if unsafe { absent(env, value) } {
            Ok(None)
        } else {
            Err(Failure::Argument(format!("{what} must be a string")))
        };
    }
    // Node-API stops at a character boundary, so a string cut short may leave up to three
    // bytes of the buffer unused: near the end, the length decides whether it all fitted.
    let mut length = written;
    if written + 4 >= inline {
        // SAFETY: asking for the length only (a null buffer).
        unsafe { sys::napi_get_value_string_utf8(env, value, null_mut(), 0, &mut length) };
    }
    let bytes: &'a [u8] = if length == written {
        // SAFETY: Node-API initialised the first `written` bytes.
        unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), written) }
    } else {
        heap.resize(length + 1, 0);
        // SAFETY: the vector holds length + 1 bytes.
        unsafe {
            sys::napi_get_value_string_utf8(
                env,
                value,
                heap.as_mut_ptr().cast::<c_char>(),
                length + 1,
                &mut written,
            )
        };
        &heap[..written]
    };
    // Node-API writes UTF-8 (lone surrogates become U+FFFD), so this never fails.
    std::str::from_utf8(bytes)
        .map(Some)
        .map_err(|_| Failure::Argument(format!("{what} is not valid text")))
}

/// A callback's arguments — those not passed are null, so that nothing reads them — and its
/// bound data.
///
/// # Safety
/// Node-API's contract for a callback: live `env` and `info`.
pub(crate) unsafe fn arguments<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> ([sys::napi_value; N], *mut c_void) {
    let mut argc = N;
    let mut argv = [null_mut(); N];
    let mut data = null_mut();
    // SAFETY: `argv` holds N handles.
    unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            null_mut(),
            &mut data,
        )
    };
    for slot in argv.iter_mut().skip(argc) {
        *slot = null_mut();
    }
    (argv, data)
}

/// The numbers of a `Float64Array` argument, to write into.
///
/// # Safety
/// `env` and `value` are live handles of the current call; the slice is used only during it,
/// on the JS thread — the only thread that can touch the array meanwhile.
pub(crate) unsafe fn float64_out<'a>(
    env: sys::napi_env,
    value: sys::napi_value,
) -> Result<&'a mut [f64], Failure> {
    let (mut kind, mut length, mut numbers) = (0, 0usize, null_mut());
    let (mut buffer, mut offset) = (null_mut(), 0usize);
    // SAFETY: a live handle; on a non-typed-array the status is an error and `kind` unset.
    let status = unsafe {
        sys::napi_get_typedarray_info(
            env,
            value,
            &mut kind,
            &mut length,
            &mut numbers,
            &mut buffer,
            &mut offset,
        )
    };
    if status != sys::Status::napi_ok
        || kind != sys::TypedarrayType::float64_array
        || numbers.is_null()
    {
        return Err(Failure::Argument("out must be a Float64Array".to_owned()));
    }
    // SAFETY: the array's `length` numbers (see the function's contract).
    Ok(unsafe { std::slice::from_raw_parts_mut(numbers.cast::<f64>(), length) })
}

/// A count argument (`cost`, `nowMs`): an integer from 0 to 2^53, or absent.
///
/// # Safety
/// `env` and `value` are live handles of the current call.
pub(crate) unsafe fn count(
    env: sys::napi_env,
    value: sys::napi_value,
    what: &str,
) -> Result<Option<u64>, Failure> {
    if value.is_null() {
        return Ok(None);
    }
    let mut v = 0.0;
    // SAFETY: see the function's contract; a non-number gives an error status.
    if unsafe { sys::napi_get_value_double(env, value, &mut v) } != sys::Status::napi_ok {
        // SAFETY: see the function's contract.
        return if unsafe { absent(env, value) } {
            Ok(None)
        } else {
            Err(Failure::Argument(format!("{what} must be a number")))
        };
    }
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_992.0 {
        Ok(Some(v as u64))
    } else {
        Err(Failure::Argument(format!(
            "{what} must be an integer from 0 to 2^53, not {v}"
        )))
    }
}

/// The `headers` argument: an object of name → string value, or absent.
///
/// # Safety
/// `env` and `value` are live handles of the current call.
pub(crate) unsafe fn headers(
    env: sys::napi_env,
    value: sys::napi_value,
) -> Result<Vec<(String, String)>, Failure> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    let mut kind = 0;
    // SAFETY: see the function's contract.
    unsafe { sys::napi_typeof(env, value, &mut kind) };
    match kind {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => return Ok(Vec::new()),
        sys::ValueType::napi_object => {}
        _ => return Err(Failure::Argument("headers must be an object".to_owned())),
    }
    let mut names = null_mut();
    let mut length = 0u32;
    // SAFETY: `value` is an object; `names` is an array of its own enumerable keys.
    unsafe {
        sys::napi_get_property_names(env, value, &mut names);
        sys::napi_get_array_length(env, names, &mut length);
    }
    let mut out = Vec::with_capacity(length as usize);
    for i in 0..length {
        let (mut name, mut item) = (null_mut(), null_mut());
        // SAFETY: `i` is below the array's length; `name` is one of the object's keys.
        unsafe {
            sys::napi_get_element(env, names, i, &mut name);
            sys::napi_get_property(env, value, name, &mut item);
        }
        let (mut a, mut b) = (
            [const { MaybeUninit::uninit() }; INLINE],
            [const { MaybeUninit::uninit() }; INLINE],
        );
        let (mut ha, mut hb) = (Vec::new(), Vec::new());
        // SAFETY: live handles of this call.
        let name = unsafe { text(env, name, &mut a, &mut ha, "a header name") }?;
        // SAFETY: live handles of this call.
        let item = unsafe { text(env, item, &mut b, &mut hb, "a header value") }?;
        if let (Some(name), Some(item)) = (name, item) {
            out.push((name.to_owned(), item.to_owned()));
        }
    }
    Ok(out)
}

unsafe extern "C" fn check_sync(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Node-API calls this with a live `env` and `info`.
        unsafe { decide(env, info) }.map(|()| null_mut())
    }));
    // SAFETY: the live `env` of this call.
    unsafe { settle(env, outcome) }
}

unsafe extern "C" fn crossing(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Node-API calls this with a live `env` and `info`. The arguments are read as
        // `check_sync` reads them, and nothing is decided.
        unsafe {
            with_request(env, info, |_, out, request| {
                std::hint::black_box((out, request));
                Ok(())
            })
        }
        .map(|()| null_mut())
    }));
    // SAFETY: the live `env` of this call.
    unsafe { settle(env, outcome) }
}

unsafe extern "C" fn authenticate(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Node-API calls this with a live `env` and `info`.
        unsafe { verify(env, info) }
    }));
    // SAFETY: the live `env` of this call.
    unsafe { settle(env, outcome) }
}

unsafe extern "C" fn authorize_sync(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Node-API calls this with a live `env` and `info`.
        unsafe { authorize(env, info) }
    }));
    // SAFETY: the live `env` of this call.
    unsafe { settle(env, outcome) }
}

unsafe extern "C" fn record_response(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Node-API calls this with a live `env` and `info`.
        unsafe { record(env, info) }.map(|()| null_mut())
    }));
    // SAFETY: the live `env` of this call.
    unsafe { settle(env, outcome) }
}

/// A number argument, or the failure naming it when it is not one.
///
/// # Safety
/// `env` is the live env of the current call and `value` null or one of its handles.
pub(crate) unsafe fn number(
    env: sys::napi_env,
    value: sys::napi_value,
    what: &str,
) -> Result<f64, Failure> {
    let mut v = 0.0;
    // SAFETY: see the function's contract; a non-number (or a null handle) gives an error.
    if value.is_null()
        || unsafe { sys::napi_get_value_double(env, value, &mut v) } != sys::Status::napi_ok
    {
        return Err(Failure::Argument(format!("{what} must be a number")));
    }
    Ok(v)
}

/// # Safety
/// Node-API's contract for a callback: live `env` and `info`.
unsafe fn record(env: sys::napi_env, info: sys::napi_callback_info) -> Result<(), Failure> {
    // SAFETY: see the function's contract.
    let (argv, data) = unsafe { arguments::<4>(env, info) };
    // SAFETY: `data` is the engine `bound_function` bound, alive while the function is.
    let engine = unsafe { &*data.cast_const().cast::<floodwall::Engine>() };
    let mut b0 = [const { MaybeUninit::<u8>::uninit() }; INLINE];
    let mut b1 = [const { MaybeUninit::<u8>::uninit() }; INLINE];
    let (mut h0, mut h1) = (Vec::new(), Vec::new());
    // SAFETY (the reads below): live handles of this call (or null).
    let method = unsafe { text(env, argv[0], &mut b0, &mut h0, "method") }?
        .ok_or_else(|| Failure::Argument("method must be a string".to_owned()))?;
    let path = unsafe { text(env, argv[1], &mut b1, &mut h1, "path") }?
        .ok_or_else(|| Failure::Argument("path must be a string".to_owned()))?;
    let status = unsafe { number(env, argv[2], "status") }?;
    let code = status as u16;
    if !(status.fract() == 0.0 && f64::from(code) == status && HTTP_STATUSES.contains(&code)) {
        return Err(Failure::Argument(format!(
            "status must be an HTTP status, an integer from 100 to 999, not {status}"
        )));
    }
    let latency_ms = unsafe { number(env, argv[3], "latencyMs") }?;
    let latency = duration_from_millis(latency_ms).ok_or_else(|| {
        Failure::Argument(format!(
            "latencyMs must be a finite number >= 0, not {latency_ms}"
        ))
    })?;
    engine.record_response(method, path, code, latency);
    Ok(())
}

/// The callback's return value (`undefined` for a null one), or its failure thrown.
///
/// # Safety
/// `env` is the live env of the current call.
pub(crate) unsafe fn settle(
    env: sys::napi_env,
    outcome: std::thread::Result<Result<sys::napi_value, Failure>>,
) -> sys::napi_value {
    let failure = match outcome {
        Ok(Ok(value)) if !value.is_null() => return value,
        Ok(Ok(_)) => None,
        Ok(Err(failure)) => Some(failure),
        Err(_) => Some(Failure::Argument("a panic in floodwall".to_owned())),
    };
    // SAFETY: throwing on the live `env` of this call.
    unsafe {
        match failure {
            None => {}
            Some(Failure::Argument(message)) => {
                let message = CString::new(message).unwrap_or_default();
                sys::napi_throw_type_error(env, null_mut(), message.as_ptr());
            }
            Some(Failure::Core(json)) => {
                let message = CString::new(json).unwrap_or_default();
                sys::napi_throw_error(env, c"GenericFailure".as_ptr(), message.as_ptr());
            }
        }
        let mut undefined = null_mut();
        sys::napi_get_undefined(env, &mut undefined);
        undefined
    }
}

/// A JS string, or `null` for `None`.
///
/// # Safety
/// `env` is the live env of the current call.
pub(crate) unsafe fn js_text(env: sys::napi_env, text: Option<&str>) -> sys::napi_value {
    let mut value = null_mut();
    // SAFETY: `text` is valid UTF-8 of the given length.
    unsafe {
        match text {
            Some(t) => sys::napi_create_string_utf8(
                env,
                t.as_ptr().cast::<c_char>(),
                t.len() as isize,
                &mut value,
            ),
            None => sys::napi_get_null(env, &mut value),
        }
    };
    value
}

/// `[subject, role, keyId, algorithm, expiresAtMs]` (`null` for what the token lacks).
///
/// # Safety
/// `env` is the live env of the current call.
pub(crate) unsafe fn identity_array(
    env: sys::napi_env,
    identity: &floodwall::Identity,
) -> sys::napi_value {
    // SAFETY: creating values on the live env of this call.
    unsafe {
        let mut array = null_mut();
        sys::napi_create_array_with_length(env, 5, &mut array);
        sys::napi_set_element(env, array, 0, js_text(env, Some(&identity.subject)));
        sys::napi_set_element(env, array, 1, js_text(env, identity.role.as_deref()));
        sys::napi_set_element(env, array, 2, js_text(env, identity.key_id.as_deref()));
        sys::napi_set_element(env, array, 3, js_text(env, Some(identity.algorithm)));
        let mut expires = null_mut();
        match identity.expires_at {
            Some(t) => sys::napi_create_double(env, t.as_millis() as f64, &mut expires),
            None => sys::napi_get_null(env, &mut expires),
        };
        sys::napi_set_element(env, array, 4, expires);
        array
    }
}

/// # Safety
/// Node-API's contract for a callback: live `env` and `info`.
unsafe fn verify(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Result<sys::napi_value, Failure> {
    // SAFETY: see the function's contract.
    let (argv, data) = unsafe { arguments::<2>(env, info) };
    // SAFETY: `data` is the engine `bound_function` bound, alive while the function is.
    let engine = unsafe { &*data.cast_const().cast::<floodwall::Engine>() };
    let mut buffer = [const { MaybeUninit::<u8>::uninit() }; INLINE_TOKEN];
    let mut heap = Vec::new();
    // SAFETY (the reads below): live handles of this call.
    let authorization = unsafe { text(env, argv[0], &mut buffer, &mut heap, "authorization") }?
        .ok_or_else(|| Failure::Argument("authorization must be a string".to_owned()))?;
    let now_ms = unsafe { count(env, argv[1], "nowMs") }?;
    let identity = match now_ms {
        Some(ms) => engine.authenticate_at(authorization, Timestamp::from_millis(ms)),
        None => engine.authenticate(authorization),
    }
    .map_err(|e| Failure::Core(to_napi(&e).reason))?;
    // SAFETY: the live env of this call.
    Ok(unsafe { identity_array(env, &identity) })
}

/// # Safety
/// Node-API's contract for a callback: live `env` and `info`.
unsafe fn decide(env: sys::napi_env, info: sys::napi_callback_info) -> Result<(), Failure> {
    // SAFETY: see the function's contract.
    unsafe {
        with_request(env, info, |engine, out, request| {
            let mut decision = engine
                .check(request)
                .map_err(|e| Failure::Core(to_napi(&e).reason))?;
            write_checked(&mut decision, out)
        })
    }
}

/// Reads `checkSync`'s arguments — the engine bound to the function, the output row, the
/// request — and hands them to `f`.
///
/// # Safety
/// Node-API's contract for a callback: live `env` and `info`; the function's data is an
/// engine (as [`check_function`] and [`crossing_function`] bind it).
#[inline(always)]
unsafe fn with_request(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    f: impl FnOnce(&floodwall::Engine, &mut [f64], &Request<'_>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    // SAFETY: see the function's contract.
    let (argv, data) = unsafe { arguments::<ARGS>(env, info) };
    // SAFETY: `data` is the engine the function was bound to, alive while the function is.
    let engine = unsafe { &*data.cast_const().cast::<floodwall::Engine>() };

    // SAFETY: a live handle of this call.
    let out = unsafe { float64_out(env, argv[0]) }?;

    let mut b0 = [const { MaybeUninit::<u8>::uninit() }; INLINE];
    let mut b1 = [const { MaybeUninit::<u8>::uninit() }; INLINE];
    let mut b2 = [const { MaybeUninit::<u8>::uninit() }; INLINE];
    let mut b3 = [const { MaybeUninit::<u8>::uninit() }; INLINE];
    let mut b4 = [const { MaybeUninit::<u8>::uninit() }; INLINE];
    let (b0, b1, b2, b3, b4) = (&mut b0, &mut b1, &mut b2, &mut b3, &mut b4);
    let mut heaps: [Vec<u8>; 5] = Default::default();
    let [h0, h1, h2, h3, h4] = &mut heaps;
    // SAFETY (the reads below): live handles of this call.
    let subject = unsafe { text(env, argv[1], b0, h0, "subject") }?;
    let role = unsafe { text(env, argv[2], b1, h1, "role") }?;
    let method = unsafe { text(env, argv[3], b2, h2, "method") }?;
    let path = unsafe { text(env, argv[4], b3, h3, "path") }?;
    let ip = unsafe { text(env, argv[5], b4, h4, "ip") }?;
    let tail = unsafe { Tail::read(env, argv[6], argv[7], argv[8]) }?;
    let pairs = tail.pairs();

    let request = Request {
        method: method.unwrap_or("GET"),
        path: path.unwrap_or("/"),
        subject,
        role,
        ip,
        headers: &pairs,
        cost: tail.cost,
        now: tail.now,
    };
    f(engine, out, &request)
}

/// # Safety
/// Node-API's contract for a callback: live `env` and `info`.
unsafe fn authorize(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Result<sys::napi_value, Failure> {
    // SAFETY: see the function's contract.
    let (argv, data) = unsafe { arguments::<8>(env, info) };
    // SAFETY: `data` is the engine `bound_function` bound, alive while the function is.
    let engine = unsafe { &*data.cast_const().cast::<floodwall::Engine>() };
    // SAFETY: a live handle of this call.
    let out = unsafe { float64_out(env, argv[0]) }?;
    let mut b0 = [const { MaybeUninit::<u8>::uninit() }; INLINE_TOKEN];
    let mut b1 = [const { MaybeUninit::<u8>::uninit() }; INLINE];
    let mut b2 = [const { MaybeUninit::<u8>::uninit() }; INLINE];
    let mut b3 = [const { MaybeUninit::<u8>::uninit() }; INLINE];
    let (b0, b1, b2, b3) = (&mut b0, &mut b1, &mut b2, &mut b3);
    let mut heaps: [Vec<u8>; 4] = Default::default();
    let [h0, h1, h2, h3] = &mut heaps;
    // SAFETY (the reads below): live handles of this call (or null).
    let authorization = unsafe { text(env, argv[1], b0, h0, "authorization") }?
        .ok_or_else(|| Failure::Argument("authorization must be a string".to_owned()))?;
    let method = unsafe { text(env, argv[2], b1, h1, "method") }?;
    let path = unsafe { text(env, argv[3], b2, h2, "path") }?;
    let ip = unsafe { text(env, argv[4], b3, h3, "ip") }?;
    let tail = unsafe { Tail::read(env, argv[5], argv[6], argv[7]) }?;
    let pairs = tail.pairs();
    let request = Request {
        method: method.unwrap_or("GET"),
        path: path.unwrap_or("/"),
        subject: None,
        role: None,
        ip,
        headers: &pairs,
        cost: tail.cost,
        now: tail.now,
    };
    let mut authorized = engine
        .authorize(authorization, &request)
        .map_err(|e| Failure::Core(to_napi(&e).reason))?;
    write_checked(&mut authorized.decision, out)?;
    // SAFETY: the live env of this call.
    Ok(unsafe { identity_array(env, &authorized.identity) })
}

/// The arguments every deciding function ends with: cost, nowMs, headers.
struct Tail {
    cost: u64,
    now: Option<Timestamp>,
    headers: Vec<(String, String)>,
}

impl Tail {
    /// # Safety
    /// `env` is the live env of the current call; each value null or one of its handles.
    unsafe fn read(
        env: sys::napi_env,
        cost: sys::napi_value,
        now_ms: sys::napi_value,
        headers_value: sys::napi_value,
    ) -> Result<Self, Failure> {
        // SAFETY (the reads below): see the function's contract.
        Ok(Tail {
            cost: unsafe { count(env, cost, "cost") }?.unwrap_or(1),
            now: unsafe { count(env, now_ms, "nowMs") }?.map(Timestamp::from_millis),
            headers: unsafe { headers(env, headers_value) }?,
        })
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// Writes `decision` into `out`, if it fits.
fn write_checked(decision: &mut floodwall::Decision<'_>, out: &mut [f64]) -> Result<(), Failure> {
    let needed = decision_len(decision.layers().len());
    if out.len() < needed {
        return Err(Failure::Argument(format!(
            "out holds {} numbers; this decision needs {needed}",
            out.len()
        )));
    }
    decision::write(decision, out);
    Ok(())
}
