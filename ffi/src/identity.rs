//! Bearer tokens: `fw_authenticate`, `fw_authorize`, and the `fw_identity` they verify.

use std::ffi::{CString, c_char};
use std::sync::Arc;

use floodwall_core::Identity;

use crate::check::{decision_of, fw_decision, fw_request, request_of};
use crate::engine::fw_engine;
use crate::error::fw_result;
use crate::ffi::{Castable, Out, c_string, copy_out, free_handle, text, to_handle, try_ref};
use crate::panic::guard;

/// A verified caller. Immutable; readable from any thread. One from `fw_authenticate` or
/// `fw_authorize` is the caller's to free; one an HTTP exchange lends
/// (`fw_http_exchange_identity`) goes with the exchange.
pub struct fw_identity {
    _private: [u8; 0],
}

/// The value behind an `fw_identity`: the identity and its strings, NUL-terminated.
#[derive(Debug)]
pub(crate) struct IdentityBox {
    identity: Arc<Identity>,
    subject: CString,
    role: Option<CString>,
}

impl IdentityBox {
    pub(crate) fn new(identity: Arc<Identity>) -> Self {
        IdentityBox {
            subject: c_string(identity.subject.clone()),
            role: identity.role.clone().map(c_string),
            identity,
        }
    }
}

impl Castable for fw_identity {
    type RustType = IdentityBox;
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
        // SAFETY: see the function's contract.
        let (out, engine, header) = unsafe {
            (
                Out::new(out, "out")?,
                try_ref(engine, "engine")?,
                text(authorization, "authorization")?,
            )
        };
        out.write(to_handle(IdentityBox::new(engine.authenticate(header)?)));
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
        // SAFETY: see the function's contract.
        let (out_identity, out, engine, header, request) = unsafe {
            (
                Out::new(out_identity, "out_identity")?,
                Out::new(out, "out")?,
                try_ref(engine, "engine")?,
                text(authorization, "authorization")?,
                request_of(request)?,
            )
        };
        let mut authorized = engine.authorize(header, &request.request())?;
        out.write(decision_of(&mut authorized.decision));
        out_identity.write(to_handle(IdentityBox::new(authorized.identity)));
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
    guard(|| {
        // SAFETY: see the function's contract.
        let (id, out) = unsafe { (try_ref(identity, "identity")?, Out::new(out, "out")?) };
        out.write(id.subject.as_ptr());
        Ok(())
    })
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
    guard(|| {
        // SAFETY: see the function's contract.
        let (id, out) = unsafe { (try_ref(identity, "identity")?, Out::new(out, "out")?) };
        out.write(id.role.as_ref().map_or(std::ptr::null(), |r| r.as_ptr()));
        Ok(())
    })
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
        // SAFETY: see the function's contract.
        let id = unsafe { try_ref(identity, "identity") }?;
        let json = serde_json::to_string(&id.identity.claims).unwrap_or_default();
        // SAFETY: see the function's contract.
        unsafe { copy_out(json.as_bytes(), buf, len, out_len) }
    })
}

/// Frees an identity from `fw_authenticate` or `fw_authorize` (NULL does nothing).
///
/// # Safety
/// `identity` is NULL or a live handle the caller owns, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_identity_free(identity: *mut fw_identity) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(identity) }
}
