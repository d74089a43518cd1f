//! Monitoring: what happened to each request, kept so that an operator can see a surge coming
//! and who hit the limits.
//!
//! A host (or the engine) records one [`Event`] per request; the [`Aggregator`] keeps, in
//! bounded memory, per-minute counters over a horizon and the heavy hitters — the most
//! requested endpoints, the subjects, roles and endpoints with the most rate-limit breaches,
//! the upstreams with the most failures — and answers a [`Report`] (JSON-serialisable) at any
//! time. Nothing grows with traffic: the minute ring holds `horizon` slots and every top list
//! is a space-saving sketch of a fixed number of entries, whose counts are exact for any key
//! that stays in it and overestimate by at most the recorded error otherwise.
//!
//! This module is the in-memory half of monitoring; the Redis Streams sink and the engine's
//! own recording come with the rest of the monitoring issue.

mod aggregate;
mod topk;

pub use aggregate::{Aggregator, Event, EventOutcome, Report};
pub use topk::{TopEntry, TopK};
