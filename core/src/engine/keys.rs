//! Per-key administration (rate-limiter-flexible's `get/block/delete/penalty/reward`,
//! express-rate-limit's `getKey/resetKey`, Upstash's `getRemaining/resetUsedTokens`): for one
//! key of one rule, what it has left ([`Engine::inspect`]), starting it afresh
//! ([`Engine::reset_key`]), blocking it for a while ([`Engine::block_key`]), and taking or
//! giving back points ([`Engine::penalize`], [`Engine::reward`]), and a limit of its own for a
//! while ([`Engine::set_key_limit`], Upstash's dynamic limits per key) — on either store, and
//! on Redis for every process at once.
//!
//! A key's own limit replaces its policy's limit (a token bucket's capacity, its refill rate
//! scaled with it so that an empty bucket refills in the same time) until its lifetime ends;
//! the key's counts are the same under either, so what it counted carries on both ways. Only
//! a rule with `key_limits = true` takes them: its decisions look for their key's limit (on
//! Redis one more key read in the script; on the memory store one more lookup in the shard
//! already locked), and the other rules pay nothing. `reset_key` keeps a key's own limit;
//! [`Engine::clear_key_limit`] takes it away. A cost above the policy's limit is refused as
//! before, whatever the key's own. While Redis is down the in-process fallback judges keys by
//! their policies.
//!
//! A key is named as its rule counts it: the subject, the client address (any spelling; an
//! IPv6 address by its subnet), a header's value, `METHOD /path` for an endpoint key (the
//! path in normal form), nothing for a `global` rule; `None` names the one counter of the
//! requests that lack the keyed part. The role picks the policy (each role with an override
//! counts apart). A rule that counts locally (`sync`) cannot be administered.

use std::time::Duration;

use super::AddressText;
use super::Engine;
use crate::clock::Timestamp;
use crate::decision::StoreUsed;
use crate::error::{Error, ErrorKind};
use crate::http::{PathBuffer, normalize_path};
use crate::limit::{KeyKind, Outcome};
use crate::store::{KeyOp, Layer};

/// One key of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// The key as the rule counts it (see the module docs); `None`: the requests lacking
    /// the keyed part (and, for a `global` rule, anything).
    pub key: Option<&'a str>,
    /// The role whose policy counts the key (`None`: the rule's default).
    pub role: Option<&'a str>,
    /// The time the operation happens at (`None`: the engine's clock), as a request's
    /// [`now`](super::Request::now) — for replaying a recorded sequence and for tests.
    pub now: Option<Timestamp>,
}

impl<'a> KeyRef<'a> {
    /// `key` of `rule`, under the rule's default policy.
    pub const fn new(rule: &'a str, key: &'a str) -> Self {
        KeyRef {
            rule,
            key: Some(key),
            role: None,
            now: None,
        }
    }

    /// The same key as counted for `role`.
    pub const fn role(mut self, role: &'a str) -> Self {
        self.role = Some(role);
        self
    }

    /// The same key, operated on at `now` instead of the engine's clock.
    pub const fn at(mut self, now: Timestamp) -> Self {
        self.now = Some(now);
        self
    }
}

/// What a key of a rule has left ([`Engine::inspect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStatus {
    /// The limit (or bucket capacity) of the key's policy.
    pub limit: u64,
    /// The largest cost it would admit now (0 while blocked).
    pub remaining: u64,
    /// Time until it is back at its full quota.
    pub reset_after: Duration,
    /// How much longer it is blocked, if it is.
    pub blocked_for: Option<Duration>,
    /// How much longer its own limit ([`Engine::set_key_limit`]) is in force, if it has one:
    /// `limit` is that limit meanwhile.
    pub key_limit_for: Option<Duration>,
    /// Who answered: the store, or while Redis fails its fallback (`fallback`) or policy.
    pub store: StoreUsed,
}

impl Engine {
    /// What `key` has left now; consumes nothing.
    pub fn inspect(&self, key: &KeyRef<'_>) -> Result<KeyStatus, Error> {
        self.with_key(key, |layer, now| {
            let own = if layer.quota.key_limits() {
                self.store.key_limit(layer, now)?
            } else {
                None
            };
            let (outcome, verdict, _): (Outcome, _, _) = self.store.decide_one(layer, 0, now)?;
            Ok(KeyStatus {
                limit: outcome
                    .own_limit()
                    .or(own.map(|(limit, _)| limit))
                    .unwrap_or_else(|| layer.quota.limit()),
                key_limit_for: own.map(|(_, left)| left),
                remaining: outcome.remaining,
                reset_after: outcome.reset_after(),
                blocked_for: outcome.blocked().then(|| outcome.retry_after()),
                store: verdict.store,
            })
        })
    }

    /// Starts `key` afresh: what it counted and its block are forgotten.
    pub fn reset_key(&self, key: &KeyRef<'_>) -> Result<(), Error> {
        self.with_key(key, |layer, now| {
            self.store.administer(layer, KeyOp::Forget, now)
        })
    }

    /// Blocks `key` for `length` from now: every request of it is denied until then, as a
    /// block after denials is. The rule must block keys (`block_for`): its decisions consult
    /// blocks; other rules answer `invalid_config`.
    pub fn block_key(&self, key: &KeyRef<'_>, length: Duration) -> Result<(), Error> {
        self.with_key(key, |layer, now| {
            if layer.quota.block().is_none() {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "rule {:?} does not block keys: give it block_for to block its keys",
                        layer.rule
                    ),
                ));
            }
            self.store.administer(layer, KeyOp::Block { length }, now)
        })
    }

    /// Takes `points` from `key` now, as requests would (never beyond an exhausted state).
    pub fn penalize(&self, key: &KeyRef<'_>, points: u64) -> Result<(), Error> {
        self.with_key(key, |layer, now| {
            self.store
                .administer(layer, KeyOp::Charge { cost: points }, now)
        })
    }

    /// Gives `points` back to `key` now (never beyond a fresh state; a log gives back its
    /// newest entries).
    pub fn reward(&self, key: &KeyRef<'_>, points: u64) -> Result<(), Error> {
        self.with_key(key, |layer, now| {
            self.store
                .administer(layer, KeyOp::Reward { cost: points }, now)
        })
    }

    /// Judges `key` by its own `limit` (a token bucket's capacity, its refill rate scaled with
    /// it) for `lifetime` from now, replacing any own limit it had; then by its policy again.
    /// The rule must take key limits (`key_limits = true`): other rules answer
    /// `invalid_config`. `lifetime` is from 1 ms to 366 days; `limit` at least 1 (and, for a
    /// token bucket, at most its refill time in µs; for the others, `limit × window` below
    /// 2^53 µs).
    pub fn set_key_limit(
        &self,
        key: &KeyRef<'_>,
        limit: u64,
        lifetime: Duration,
    ) -> Result<(), Error> {
        let invalid = |message: String| Error::new(ErrorKind::InvalidConfig, message);
        let limit = std::num::NonZeroU64::new(limit)
            .ok_or_else(|| invalid("a key's limit must be at least 1, got 0".to_owned()))?;
        if lifetime < Duration::from_millis(1) || lifetime > crate::limit::MAX_PERIOD {
            return Err(invalid(format!(
                "a key limit's lifetime must be from 1ms to 366 days, got {lifetime:?}"
            )));
        }
        self.with_key(key, |layer, now| {
            takes_key_limits(layer, key.rule)?;
            let (limit, period) = layer
                .quota
                .own(limit)
                .map_err(|e| invalid(format!("rule {:?}: {}", key.rule, e.message())))?;
            self.store.administer(
                layer,
                KeyOp::SetLimit {
                    limit,
                    period,
                    lifetime,
                },
                now,
            )
        })
    }

    /// Takes `key`'s own limit away: its policy's applies again (nothing happens to a key
    /// without one). The rule must take key limits, as for [`set_key_limit`](Self::set_key_limit).
    pub fn clear_key_limit(&self, key: &KeyRef<'_>) -> Result<(), Error> {
        self.with_key(key, |layer, now| {
            takes_key_limits(layer, key.rule)?;
            self.store.administer(layer, KeyOp::ClearLimit, now)
        })
    }

    /// Runs `f` on the layer `key` names, at `key.now` or else the engine's clock.
    fn with_key<T>(
        &self,
        key: &KeyRef<'_>,
        f: impl FnOnce(&Layer<'_>, Timestamp) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let live = self.live();
        let Some(index) = live.rules.iter().position(|r| r.name() == key.rule) else {
            return Err(Error::new(
                ErrorKind::UnknownRule,
                format!(
                    "no rule is named {:?}; the rules are {:?}",
                    key.rule,
                    live.rules.iter().map(|r| r.name()).collect::<Vec<_>>()
                ),
            ));
        };
        let rule = &live.rules[index];
        let (variant, policy) = rule.policy_for(key.role);
        let mut address = AddressText::new();
        let endpoint: String;
        let part: Option<&[u8]> = match (rule.key(), key.key) {
            (KeyKind::Global, _) => Some(&[]),
            (_, None) => None,
            (KeyKind::Ip, Some(ip)) => live.ip_key(Some(ip), &mut address).map(str::as_bytes),
            (KeyKind::Endpoint, Some(text)) => {
                let (method, path) = text.trim().split_once(' ').ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "rule {:?} is keyed by endpoint: name the key as \"METHOD /path\", not {text:?}",
                            key.rule
                        ),
                    )
                })?;
                let mut buffer = PathBuffer::new();
                let path = normalize_path(path.trim(), live.http.fold_case, &mut buffer);
                endpoint = format!("{} {}", method.to_ascii_uppercase(), path.as_str());
                Some(endpoint.as_bytes())
            }
            (KeyKind::Subject | KeyKind::Header(_), Some(text)) => Some(text.as_bytes()),
        };
        let layer = Layer {
            rule: rule.stored_name(),
            slot: super::decide::slot_of(rule, variant, part.is_none()),
            quota: policy.quota(),
            key: part.unwrap_or_default(),
            shadow: false,
        };
        f(&layer, key.now.unwrap_or_else(|| self.clock.now()))
    }
}

/// `Ok` when `layer`'s rule (named `rule`) takes key limits, else the `invalid_config` error
/// that says how to make it.
fn takes_key_limits(layer: &Layer<'_>, rule: &str) -> Result<(), Error> {
    if layer.quota.key_limits() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidConfig,
        format!(
            "rule {rule:?} takes no key limits: give it key_limits = true to give its keys limits of their own"
        ),
    ))
}
