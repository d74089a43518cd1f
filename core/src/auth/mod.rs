//! JWT authentication: a bearer token in, an [`Identity`] (subject, role, claims) out — or a
//! rejection with a stable kind, the HTTP status and the `WWW-Authenticate` challenge to send.
//!
//! Built from the `[auth]` section ([`AuthConfig`]) and reached through
//! [`Engine::authenticate`](crate::Engine::authenticate) and
//! [`Engine::authorize`](crate::Engine::authorize). Signatures are
//! checked by the `jsonwebtoken` crate on its `aws_lc_rs` backend (chosen by measurement: RSA
//! and ECDSA verify 4–9× faster than on `rust_crypto`, see the README's performance section),
//! called directly rather than through jsonwebtoken's process-wide provider, which another
//! crate's features or a host's `install_default` could change;
//! everything around them — token shape, header, key selection, claims — is checked here, so
//! that every rejection has its own kind and the clock is the engine's (injected in tests).
//!
//! # What is checked, in order
//!
//! 1. The `Authorization` value: `Bearer <token>` (scheme in any case), or a bare token when
//!    `bare_token` is set. Nothing, another scheme, or a bare token otherwise: `missing_token`
//!    (RFC 6750 §3.1: no credentials, so a challenge without an error code).
//! 2. The token's length against `max_token_bytes` (default 8 KiB), before any decoding:
//!    `token_too_large`.
//! 3. Its shape: three segments of unpadded base64url, a header that is a JSON object with a
//!    string `alg`, no `crit` (not even `null`); otherwise `malformed_token`.
//! 4. `alg` is one of `algorithms` (never `none`): `algorithm_not_allowed`.
//! 5. The key: the token's `kid` selects that key alone, and the key must verify `alg` —
//!    otherwise `algorithm_not_allowed` (an `HS256` token naming an RSA key's `kid` is the
//!    key-confusion attack). A `kid` that names no key is `unknown_key`. A token without a
//!    `kid` is tried against every key that verifies its `alg` (so give keys a `kid` when
//!    there are many: each try of a forged token costs a verification).
//! 6. The signature: `bad_signature`.
//! 7. The payload is a JSON object (`malformed_token`), then the claims: `exp` (required unless
//!    `require_exp = false`; expired when `now >= exp + leeway`: `expired`), `nbf` and
//!    `iat` (`> now + leeway`: `not_yet_valid`), `iss` (`wrong_issuer`), `aud` (string
//!    or list; `wrong_audience` — a token naming an audience is refused when none is
//!    configured), the subject (a non-empty string), the required claims (`missing_claim`),
//!    and claims of the wrong type (`invalid_claim`).
//! 8. The role: the claim at `role_claim` (a dotted path, e.g. `realm_access.roles`; a
//!    top-level claim whose name contains dots, like `https://example.com/roles`, is found
//!    too), a string or a list of strings, each value mapped through `role_map`; with `roles`
//!    set, the first of `roles` the token carries wins, else the first value. None:
//!    `default_role`.
//!
//! # Error kinds
//!
//! | kind | when | HTTP | `WWW-Authenticate` |
//! |---|---|---|---|
//! | `missing_token` | no bearer token | 401 | `Bearer realm="…"` |
//! | `malformed_token` | not a compact JWS / not JSON | 401 | `error="invalid_token"` |
//! | `token_too_large` | over `max_token_bytes` | 401 | `error="invalid_token"` |
//! | `algorithm_not_allowed` | `alg` not accepted, or not the selected key's | 401 | `error="invalid_token"` |
//! | `unknown_key` | `kid` names no key / no key for `alg` | 401 | `error="invalid_token"` |
//! | `bad_signature` | the signature does not verify | 401 | `error="invalid_token"` |
//! | `expired` | `exp` passed | 401 | `error="invalid_token"` |
//! | `not_yet_valid` | `nbf`/`iat` in the future | 401 | `error="invalid_token"` |
//! | `wrong_issuer` | `iss` not accepted | 401 | `error="invalid_token"` |
//! | `wrong_audience` | `aud` not accepted | 401 | `error="invalid_token"` |
//! | `missing_claim` | `exp`, subject, `iss`/`aud` or a required claim absent | 401 | `error="invalid_token"` |
//! | `invalid_claim` | a claim of the wrong type | 401 | `error="invalid_token"` |
//!
//! The challenge's `error_description` is a fixed sentence per kind
//! ([`ErrorKind::challenge_description`](crate::error::ErrorKind::challenge_description)); the error's message, for logs, gives the details,
//! with any token-supplied text quoted and cut short.
//!
//! # Cache
//!
//! With `[auth.cache]`, a token verified once is answered from memory until its `exp` minus the
//! leeway or the TTL (see the `cache` module). Rejections are never cached.

mod authenticator;
mod cache;
mod claims;
mod config;
mod identity;
mod keys;
mod token;

pub use authenticator::Authenticator;
pub use config::{
    AuthCacheConfig, AuthConfig, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_BYTES, DEFAULT_REALM,
    JwksConfig, KeyConfig,
};
pub use identity::Identity;
