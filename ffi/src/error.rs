//! `fw_result`, the code every call returns, and the message of the last failed call on the
//! calling thread (`fw_last_error_message`, `fw_last_error_www_authenticate`).

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use floodwall_core::ErrorKind;

use crate::ffi::{c_string, copy_out};

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
    /// An argument was out of range (an unknown enum value, a string with a NUL byte, an
    /// exchange finished twice or on another engine).
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
    /// `invalid_cost`: the host's cost for a request is not an integer from 0 to 2^53.
    FW_INVALID_COST = 301,
    /// `unknown_rule`: per-key administration named no configured rule.
    FW_UNKNOWN_RULE = 302,
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
    /// The code of a core error kind. `ErrorKind` is non-exhaustive, so a kind added to the
    /// core after this mapping reaches `FW_UNKNOWN_ERROR`; the test below walks
    /// `ErrorKind::ALL` and fails on any kind that does.
    pub(crate) fn of(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidConfig => fw_result::FW_INVALID_CONFIG,
            ErrorKind::CostExceedsLimit => fw_result::FW_COST_EXCEEDS_LIMIT,
            ErrorKind::InvalidCost => fw_result::FW_INVALID_COST,
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
            ErrorKind::UnknownRule => fw_result::FW_UNKNOWN_RULE,
            ErrorKind::UnknownService => fw_result::FW_UNKNOWN_SERVICE,
            ErrorKind::UnknownUpstream => fw_result::FW_UNKNOWN_UPSTREAM,
            ErrorKind::StoreUnavailable => fw_result::FW_STORE_FAILED,
            _ => fw_result::FW_UNKNOWN_ERROR,
        }
    }
}

/// Why a call failed, for the thread-local last error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: fw_result,
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

/// A failure of the caller's use of the ABI (no core error behind it).
pub(crate) fn failure(code: fw_result, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
        challenge: None,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<(CString, Option<CString>)>> = const { RefCell::new(None) };
}

/// Makes `f` this thread's last error and answers its code.
pub(crate) fn record(f: Failure) -> fw_result {
    LAST_ERROR.with(|last| {
        *last.borrow_mut() = Some((c_string(f.message), f.challenge.map(c_string)));
    });
    f.code
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
        for (kind, &code) in ErrorKind::ALL.iter().zip(&codes) {
            assert_ne!(
                code,
                fw_result::FW_UNKNOWN_ERROR as u32,
                "{kind} has no fw_result of its own"
            );
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len(), "two kinds share a code");
    }

    /// The groups of the header: 2xx configuration, 3xx rate limits, 4xx authentication, 5xx
    /// upstreams, 6xx the shared store.
    #[test]
    fn each_kind_is_in_its_group() {
        for kind in ErrorKind::ALL {
            let group = fw_result::of(kind) as u32 / 100;
            let want = match kind {
                ErrorKind::InvalidConfig => 2,
                ErrorKind::CostExceedsLimit | ErrorKind::InvalidCost | ErrorKind::UnknownRule => 3,
                ErrorKind::NoUpstreamAvailable
                | ErrorKind::UnknownService
                | ErrorKind::UnknownUpstream => 5,
                ErrorKind::StoreUnavailable => 6,
                k if k.is_auth() => 4,
                k => panic!("{k}: no group"),
            };
            assert_eq!(group, want, "{kind}");
        }
    }
}
