//! The C ABI of floodwall: `include/floodwall.h`, generated from this crate by cbindgen.
//!
//! Conventions (after rustls-ffi):
//! - Every function returns an `fw_result` — but `fw_version` (a static string) and the
//!   `_free` functions (which cannot fail): `FW_OK`, or a code from a group that never
//!   changes meaning (1xx the caller's use of the ABI, 2xx configuration, 3xx rate limits
//!   and costs, 4xx authentication, 5xx upstreams, 6xx the shared store); the core's error
//!   kinds map one to one.
//! - Results go through out-pointers, written only on success.
//! - Handles (`fw_engine`, `fw_identity`, `fw_headers`, `fw_lease`, `fw_http_exchange`) are
//!   opaque, made by the library and released by their `_free` function; `_free(NULL)` does
//!   nothing. A handle another one lends (an exchange's headers and identity) comes as a
//!   `const` pointer, is valid until its owner is freed, and is never freed itself.
//! - Strings in are NUL-terminated UTF-8; NULL or invalid UTF-8 is an error, never a crash.
//!   Strings out are owned by the handle they come from (valid until it is freed), copied
//!   into a caller's buffer with the required length reported, or — for a document made anew
//!   by each call, whose length the caller cannot know beforehand (`fw_report_json`,
//!   `fw_prometheus`, `fw_engine_http_headers`, `fw_engine_access_lists_json` …) — a new
//!   string the caller owns and releases with `fw_string_free`.
//! - The message of the last failed call on the calling thread is available from
//!   `fw_last_error_message` (and, for authentication failures, the `WWW-Authenticate` value
//!   from `fw_last_error_www_authenticate`).
//! - No panic crosses the boundary: every body runs under `catch_unwind` (`FW_PANIC`).
//!
//! A host's HTTP middleware needs four calls per request: `fw_http` with the request as
//! received (method, target, peer, the headers `fw_engine_http_headers` names) gives an
//! `fw_http_exchange`; its verdict says to pass the request on untouched (`FW_HTTP_SKIP`),
//! to call the handler and add the exchange's headers (`FW_HTTP_PASS`), or to write the
//! exchange's status, headers and body (`FW_HTTP_REFUSE`); `fw_http_finish` takes the status
//! the client got; `fw_http_exchange_free` releases it.
//!
//! Thread safety: an `fw_engine` may be used from any number of threads at once. An
//! `fw_identity` and an `fw_headers` are immutable and may be read from any thread. An
//! `fw_lease` may be finished or freed from any thread, but by one thread only. An
//! `fw_http_exchange` may be read from any thread and finished from any thread, once; it is
//! freed when no other call is using it. A string the caller frees with `fw_string_free` is
//! the caller's: any thread may read or free it.

#![allow(unsafe_code)]
#![allow(non_camel_case_types)]

// The areas, in the order of the header.
pub mod version;

pub mod engine;

pub mod check;

pub mod keys;

pub mod headers;

pub mod identity;

pub mod http;

pub mod lease;

pub mod monitor;

pub mod health;

pub mod error;

mod ffi;
mod panic;

pub use check::*;
pub use engine::*;
pub use error::*;
pub use headers::*;
pub use health::*;
pub use http::*;
pub use identity::*;
pub use lease::*;
pub use monitor::*;
pub use version::*;
