//! floodwall: the traffic-control engine an API gateway asks on every request.
//!
//! One [`Engine`], built from a configuration ([`Engine::from_toml`], [`Engine::from_json`],
//! [`Engine::from_file`]), answers in microseconds whether a request may pass
//! ([`Engine::check`]): every rate-limit rule that matches the request — per user by role, per
//! endpoint, global — is applied in one atomic step, and the [`Decision`] says who decided,
//! what remains, when to retry, and renders the standard response headers.
//!
//! - [`auth`]: JWT bearer tokens verified into an [`Identity`] whose subject and role the
//!   rules use ([`Engine::authorize`]).
//! - [`balance`] and [`breaker`]: where a call goes ([`Engine::pick`]) — smooth weighted
//!   round-robin, least-connections or power-of-two-choices among upstreams whose circuit
//!   breaker admits it — and what came of it ([`Lease::finish`]).
//! - [`config`]: the one schema (TOML or JSON), validated with errors that name the field.
//! - [`http`]: the HTTP meaning of a request and of the answer, once for every host: normal
//!   paths, client addresses behind trusted proxies, public paths, allow and deny lists,
//!   response-aware counting, shadow mode, and the 401/403/429/503 responses
//!   ([`Engine::http`]).
//! - [`limit`]: the algorithms — fixed window, exact sliding window, sliding window counter,
//!   token bucket (GCRA) — as pure state transitions, and the rule matcher.
//! - [`store`]: where limiter state lives; [`store::MemoryStore`] is the in-process default.
//! - [`clock`]: time is injected; [`ManualClock`] drives tests.
//!
//! ```
//! use floodwall::{Engine, Request};
//!
//! let engine = Engine::from_toml(r#"
//!     [[rules]]
//!     name = "per-ip"
//!     key = "ip"
//!     algorithm = "token_bucket"
//!     capacity = 10
//!     refill_rate = 1
//! "#)?;
//! let decision = engine.check(&Request::new("GET", "/").ip("198.51.100.7"))?;
//! assert!(decision.allowed());
//! assert_eq!(decision.remaining(), Some(9));
//! assert_eq!(decision.header("RateLimit-Policy").as_deref(), Some("\"per-ip\";q=10;w=10"));
//! # Ok::<(), floodwall::Error>(())
//! ```

pub mod auth;
pub mod balance;
pub mod breaker;
pub mod clock;
mod common;
pub mod config;
mod decision;
mod engine;
mod error;
pub mod http;
pub mod limit;
mod link;
pub mod monitor;
mod path;
pub mod store;

pub use auth::{AuthConfig, Authenticator, Identity};
pub use balance::{Lease, ServicesChange, UpstreamStatus};
pub use breaker::{BreakerState, CallOutcome};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use config::Config;
pub use decision::{
    Decision, DetachedDecision, HeaderLayer, LayerStatus, StoreUsed, rate_limit_headers,
};
pub use engine::{
    ACQUIRE_MAX_ATTEMPTS, Authorized, Engine, KeyRef, KeyStatus, Permit, ReloadSummary, Request,
    RuleChange,
};
pub use error::{Error, ErrorKind};
pub use store::{StoreHealth, StoreState};

/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
