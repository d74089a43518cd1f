//! What the engine answers: a [`Decision`] and the response headers it renders.
//!
//! Headers are built only when asked ([`Decision::headers`]). Three sets, each switched by the
//! configuration's `[headers]` section:
//!
//! - IETF draft (`draft-ietf-httpapi-ratelimit-headers`): `RateLimit-Policy` lists every
//!   layer as `"name";q=<limit>;w=<window s>` (a token bucket's window is the time to refill
//!   it), and `RateLimit` every layer as `"name";r=<remaining>;t=<reset s>`.
//! - The common `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds) of the
//!   deciding layer.
//! - `Retry-After` (seconds) on denial.
//!
//! Seconds are rounded up, so a client that waits as told is never early. Layers of rules in
//! shadow mode are left out of the headers: a client sees only the limits that can deny it.

use std::fmt;
use std::time::Duration;

use smallvec::SmallVec;

use crate::common::HeadersConfig;
use crate::limit::{Outcome, Policy, Rule};

/// Which store made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreUsed {
    /// The in-process store.
    Memory,
    /// Redis (single node or cluster).
    Redis,
    /// The in-process fallback, while the shared store is unavailable.
    Fallback,
    /// The shared store was unavailable and `on_error` (`allow` or `deny`) decided alone.
    Unavailable,
    /// A denial the shared store gave for the same request a moment ago, answered again
    /// without asking it while its wait runs (`store.deny_cache`).
    DenyCache,
}

impl StoreUsed {
    /// Every store, in the order of their C and Node numbers.
    pub const ALL: [StoreUsed; 5] = [
        StoreUsed::Memory,
        StoreUsed::Redis,
        StoreUsed::Fallback,
        StoreUsed::Unavailable,
        StoreUsed::DenyCache,
    ];

    /// `memory`, `redis`, `fallback`, `unavailable` or `deny_cache`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreUsed::Memory => "memory",
            StoreUsed::Redis => "redis",
            StoreUsed::Fallback => "fallback",
            StoreUsed::Unavailable => "unavailable",
            StoreUsed::DenyCache => "deny_cache",
        }
    }

    /// Reads what [`as_str`](Self::as_str) writes.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for StoreUsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One matched rule's part in a decision.
#[derive(Debug, Clone, Copy)]
pub struct LayerStatus<'e> {
    rule: &'e Rule,
    rule_index: usize,
    policy: &'e Policy,
    outcome: Outcome,
}

impl<'e> LayerStatus<'e> {
    #[inline]
    fn new(rule: &'e Rule, rule_index: usize, policy: &'e Policy, outcome: Outcome) -> Self {
        LayerStatus {
            rule,
            rule_index,
            policy,
            outcome,
        }
    }

    /// The rule's position in [`Engine::rules`](crate::Engine::rules).
    pub fn rule_index(&self) -> usize {
        self.rule_index
    }

    /// The rule's name.
    pub fn rule(&self) -> &'e str {
        self.rule.name()
    }

    /// The policy applied: the rule's default or a role's override.
    pub fn policy(&self) -> &'e Policy {
        self.policy
    }

    /// Whether this layer admitted the request (a shadow layer may say no and deny nothing).
    pub fn allowed(&self) -> bool {
        self.outcome.allowed
    }

    /// Whether this layer denied because the key is blocked (`block_for`).
    pub fn blocked(&self) -> bool {
        self.outcome.blocked()
    }

    /// Whether the rule is in shadow mode: its denial denies nothing.
    pub fn shadow(&self) -> bool {
        self.rule.is_shadow()
    }

    /// The layer's limit (or bucket capacity): the key's own while one is in force
    /// ([`Engine::set_key_limit`](crate::Engine::set_key_limit)), else the policy's.
    pub fn limit(&self) -> u64 {
        self.outcome
            .own_limit()
            .unwrap_or_else(|| self.policy.quota().limit())
    }

    /// The largest cost this layer would admit now.
    pub fn remaining(&self) -> u64 {
        self.outcome.remaining
    }

    /// Time until this layer is back at its full quota.
    pub fn reset_after(&self) -> Duration {
        self.outcome.reset_after()
    }

    /// On denial by this layer, the least wait before the request would pass it.
    pub fn retry_after(&self) -> Duration {
        self.outcome.retry_after()
    }
}

/// The answer to [`Engine::check`](crate::Engine::check): admitted or not, which rule decided,
/// and what to tell the client.
///
/// When the request is admitted the deciding layer is the one with the least `remaining`; when
/// denied, the denying layer with the longest `retry_after` (ties go to the rule written first).
/// Layers in shadow mode never decide. A request no rule matched (or only shadow rules) is
/// admitted with no rule, limit or headers.
///
/// A decision admitted by `concurrency` rules holds their places until it is dropped (see
/// [`take_permit`](Decision::take_permit)); a clone holds nothing.
#[derive(Debug)]
pub struct Decision<'e> {
    rules: &'e [Rule],
    /// Each matched layer, in configuration order. Three fit inline, so that a whole decision
    /// (128 bytes) moves in a few register stores rather than a call to `memcpy`.
    layers: SmallVec<[Slot; 3]>,
    /// Which layer decided, or [`NONE`].
    deciding: u16,
    allowed: bool,
    headers: HeadersConfig,
    store: StoreUsed,
    /// What the request holds of `concurrency` rules, released when the decision is dropped.
    held: Option<Box<Held<'e>>>,
    /// The keys' own limits of the layers decided under one (`key_limits`), by layer index:
    /// rare, so kept out of the layers' slots.
    owns: Option<Box<OwnLimits>>,
}

/// The keys' own limits of a decision's layers decided under one: (layer index, limit).
type OwnLimits = SmallVec<[(u16, u64); 2]>;

/// A decision's permit and the engine to give it back to.
#[derive(Debug)]
struct Held<'e> {
    engine: &'e crate::Engine,
    permit: crate::Permit,
}

impl Clone for Decision<'_> {
    fn clone(&self) -> Self {
        Decision {
            rules: self.rules,
            layers: self.layers.clone(),
            deciding: self.deciding,
            allowed: self.allowed,
            headers: self.headers,
            store: self.store,
            held: None,
            owns: self.owns.clone(),
        }
    }
}

impl Drop for Decision<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            let Held { engine, permit } = *held;
            engine.release(permit);
        }
    }
}

/// One matched layer in a decision: its rule, its policy and its outcome, in 32 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    remaining: u64,
    reset_after: u64,
    retry_after: u64,
    /// The policy's index in the rule's [`policies`](Rule::policies).
    variant: u32,
    /// The rule's index (at most [`MAX_RULES`](crate::common::MAX_RULES)).
    rule: u16,
    allowed: bool,
    /// Denied by a block (`block_for`).
    blocked: bool,
}

impl Slot {
    #[inline]
    fn outcome(&self) -> Outcome {
        let outcome = Outcome::new(
            self.allowed,
            self.remaining,
            self.reset_after,
            self.retry_after,
        );
        if self.blocked {
            outcome.block(self.retry_after)
        } else {
            outcome
        }
    }

    #[inline]
    fn set(&mut self, outcome: &Outcome) {
        self.allowed = outcome.allowed;
        self.remaining = outcome.remaining;
        self.reset_after = outcome.reset_after_us();
        self.retry_after = outcome.retry_after_us();
        self.blocked = outcome.blocked();
    }

    #[inline]
    fn matched(&self) -> (usize, usize) {
        (usize::from(self.rule), self.variant as usize)
    }
}

impl<'e> Decision<'e> {
    /// A decision with no layers yet: admitted, no rule. The engine fills it in place.
    #[inline]
    pub(crate) fn empty(rules: &'e [Rule], headers: HeadersConfig, store: StoreUsed) -> Self {
        Decision {
            allowed: true,
            deciding: NONE,
            rules,
            layers: SmallVec::new(),
            headers,
            store,
            held: None,
            owns: None,
        }
    }

    /// Gives the decision the permit of its `concurrency` layers, released when it drops.
    pub(crate) fn hold(&mut self, engine: &'e crate::Engine, permit: crate::Permit) {
        self.held = Some(Box::new(Held { engine, permit }));
    }

    /// Takes out the permit of the decision's `concurrency` layers, if it holds one: the
    /// decision no longer releases it when dropped, and the caller gives it back with
    /// [`Engine::release`](crate::Engine::release) once the request is done.
    pub fn take_permit(&mut self) -> Option<crate::Permit> {
        self.held.take().map(|held| {
            let Held { permit, .. } = *held;
            permit
        })
    }

    /// Has the engine keep the decision's permit ([`Engine::keep_permit`]) and answers its
    /// number, for a host that holds permits by number; 0 when it holds none.
    ///
    /// [`Engine::keep_permit`]: crate::Engine::keep_permit
    pub fn keep_permit(&mut self) -> u64 {
        match self.held.take() {
            Some(held) => {
                let Held { engine, permit } = *held;
                engine.keep_permit(permit)
            }
            None => 0,
        }
    }

    /// Whether the decision holds a permit (it was admitted by `concurrency` rules): the
    /// places it holds are given back when it is dropped.
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// Records which store decided.
    #[inline]
    pub(crate) fn set_store(&mut self, store: StoreUsed) {
        self.store = store;
    }

    /// Adds a matched layer: rule `index` under its policy `variant`, not decided yet.
    #[inline]
    pub(crate) fn push_layer(&mut self, (index, variant): (usize, usize)) {
        self.layers.push(Slot {
            // Rule indices are below MAX_RULES and variants below MAX_ROLE_OVERRIDES + 1.
            rule: index as u16,
            variant: variant as u32,
            ..Slot::default()
        });
    }

    /// How many layers matched.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.layers.len()
    }

    /// (rule index, policy index) of layer `i`.
    #[inline]
    pub(crate) fn matched(&self, i: usize) -> (usize, usize) {
        self.layers[i].matched()
    }

    /// (rule index, policy index) of each layer, in configuration order.
    pub(crate) fn all_matched(&self) -> impl ExactSizeIterator<Item = (usize, usize)> + '_ {
        self.layers.iter().map(Slot::matched)
    }

    /// Records the outcome of layer `i`.
    #[inline]
    pub(crate) fn set_outcome(&mut self, i: usize, outcome: &Outcome) {
        self.layers[i].set(outcome);
        if outcome.own_limit().is_some() || self.owns.is_some() {
            self.set_own(i, outcome.own_limit());
        }
    }

    /// Records the key's own limit layer `i` was decided under (`None`: its policy's).
    #[cold]
    fn set_own(&mut self, i: usize, limit: Option<u64>) {
        let owns = self.owns.get_or_insert_with(Box::default);
        owns.retain(|(layer, _)| usize::from(*layer) != i);
        if let Some(limit) = limit {
            owns.push((i as u16, limit));
        }
    }

    /// Records the outcome of every layer, in order.
    #[inline]
    pub(crate) fn set_outcomes(&mut self, outcomes: &[Outcome]) {
        for (slot, outcome) in self.layers.iter_mut().zip(outcomes) {
            slot.set(outcome);
        }
        for (i, outcome) in outcomes.iter().enumerate().take(self.layers.len()) {
            if outcome.own_limit().is_some() || self.owns.is_some() {
                self.set_own(i, outcome.own_limit());
            }
        }
    }

    /// Records whether all layers admitted and picks the deciding layer among those that are
    /// not in shadow mode (`shadows`: whether any rule of the engine is).
    #[inline(always)]
    pub(crate) fn settle(&mut self, allowed: bool, shadows: bool) {
        self.allowed = allowed;
        if !shadows && self.layers.len() == 1 {
            self.deciding = 0;
            return;
        }
        let layers = &self.layers;
        let shadow = |i: usize| shadows && self.rules[usize::from(layers[i].rule)].is_shadow();
        let Some(mut deciding) = (0..layers.len()).find(|&i| !shadow(i)) else {
            self.deciding = NONE;
            return;
        };
        for (i, layer) in layers.iter().enumerate().skip(deciding + 1) {
            if shadow(i) {
                continue;
            }
            let best = &layers[deciding];
            let better = if allowed {
                layer.remaining < best.remaining
            } else if !best.allowed {
                !layer.allowed && layer.retry_after > best.retry_after
            } else {
                !layer.allowed
            };
            if better {
                deciding = i;
            }
        }
        // Fewer layers than rules, and rules are at most MAX_RULES.
        self.deciding = deciding as u16;
    }

    /// Takes in the layers of a second decision on the same request (the HTTP layer decides
    /// the rules that run before the token apart from the others): the layers in
    /// configuration order, admitted only if both were.
    pub(crate) fn absorb(&mut self, mut other: Decision<'e>) {
        if other.layers.is_empty() {
            return;
        }
        let allowed = self.allowed && other.allowed;
        if other.store != StoreUsed::Memory {
            self.store = other.store;
        }
        self.layers.extend(std::mem::take(&mut other.layers));
        self.layers.sort_by_key(|slot| slot.rule);
        self.settle(allowed, true);
    }

    /// The first rule in shadow mode that would have denied the request, if any.
    pub fn shadow_denied(&self) -> Option<&'e str> {
        self.layers()
            .find(|l| l.shadow() && !l.allowed())
            .map(|l| l.rule())
    }

    fn layer(&self, i: usize) -> Option<LayerStatus<'e>> {
        let slot = self.layers.get(i)?;
        let (index, policy) = slot.matched();
        let rule = &self.rules[index];
        let mut outcome = slot.outcome();
        if let Some(owns) = &self.owns
            && let Some((_, limit)) = owns.iter().find(|(layer, _)| usize::from(*layer) == i)
        {
            outcome = outcome.under_own(*limit);
        }
        Some(LayerStatus::new(
            rule,
            index,
            &rule.policies()[policy],
            outcome,
        ))
    }

    /// Which of [`layers`](Self::layers) decided; `None` when no rule matched.
    pub fn deciding_layer(&self) -> Option<usize> {
        let deciding = usize::from(self.deciding);
        (deciding < self.layers.len()).then_some(deciding)
    }

    fn deciding(&self) -> Option<LayerStatus<'e>> {
        self.layer(usize::from(self.deciding))
    }

    /// Whether the request may pass.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// Whether the request is denied because its key is blocked (`block_for`): the
    /// deciding rule blocked it, and [`retry_after`](Self::retry_after) is the block's end.
    pub fn blocked(&self) -> bool {
        !self.allowed && self.deciding().is_some_and(|l| l.blocked())
    }

    /// The deciding rule's name; `None` when no rule matched.
    pub fn rule(&self) -> Option<&'e str> {
        self.deciding().map(|l| l.rule())
    }

    /// Whether the deciding rule limits requests in progress (`concurrency`).
    pub(crate) fn deciding_holds(&self) -> bool {
        self.deciding().is_some_and(|l| l.rule.holds())
    }

    /// The deciding rule's position in the rules the decision was made by — [`Engine::rules`]
    /// unless a reload replaced them since (configuration order); `None` when no rule matched.
    ///
    /// [`Engine::rules`]: crate::Engine::rules
    pub fn rule_index(&self) -> Option<usize> {
        self.layers
            .get(usize::from(self.deciding))
            .map(|slot| usize::from(slot.rule))
    }

    /// The deciding layer's limit (or bucket capacity).
    pub fn limit(&self) -> Option<u64> {
        self.deciding().map(|l| l.limit())
    }

    /// The largest cost the deciding layer would admit now.
    pub fn remaining(&self) -> Option<u64> {
        self.deciding().map(|l| l.remaining())
    }

    /// Time until the deciding layer is back at its full quota.
    pub fn reset_after(&self) -> Duration {
        self.deciding().map_or(Duration::ZERO, |l| l.reset_after())
    }

    /// When denied, the least wait after which the same request passes every layer if nothing
    /// else consumes meanwhile; zero when admitted.
    pub fn retry_after(&self) -> Duration {
        if self.allowed {
            Duration::ZERO
        } else {
            self.deciding().map_or(Duration::ZERO, |l| l.retry_after())
        }
    }

    /// [`reset_after`](Decision::reset_after) in milliseconds, rounded up.
    pub fn reset_after_ms(&self) -> u64 {
        ceil_millis(self.reset_after())
    }

    /// [`retry_after`](Decision::retry_after) in milliseconds, rounded up.
    pub fn retry_after_ms(&self) -> u64 {
        ceil_millis(self.retry_after())
    }

    /// Every matched rule's status, in configuration order.
    pub fn layers(&self) -> impl ExactSizeIterator<Item = LayerStatus<'e>> + '_ {
        (0..self.layers.len()).map(|i| self.layer(i).expect("index in range"))
    }

    /// Which store decided.
    pub fn store(&self) -> StoreUsed {
        self.store
    }

    /// The response headers the configuration asks for, as (canonical name, value) pairs.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let Some(deciding) = self.deciding() else {
            return Vec::with_capacity(0);
        };
        let figures = |l: LayerStatus<'e>| HeaderLayer {
            rule: l.rule(),
            limit: l.limit(),
            window: l.policy().quota().period(),
            remaining: l.remaining(),
            reset_after: l.reset_after(),
        };
        rate_limit_headers(
            self.headers,
            self.layers().filter(|l| !l.shadow()).map(figures),
            figures(deciding),
            (!self.allowed).then(|| self.retry_after()),
        )
    }

    /// One header's value by name (any case), if the decision renders it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// One layer's figures as the rate-limit headers show them.
#[derive(Debug, Clone, Copy)]
pub struct HeaderLayer<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// Its limit (or bucket capacity).
    pub limit: u64,
    /// Its window (for a token bucket, the time to refill it).
    pub window: Duration,
    /// What remains.
    pub remaining: u64,
    /// Time until it is back at its full quota.
    pub reset_after: Duration,
}

/// The rate-limit headers of a decision (see the module docs): `layers` in configuration
/// order (shadow layers left out), `deciding` the deciding layer, `retry_after` the wait of a
/// denial (`None` when admitted). What [`Decision::headers`] renders; bindings that keep a
/// decision as plain figures render through it too.
pub fn rate_limit_headers<'a>(
    config: HeadersConfig,
    layers: impl IntoIterator<Item = HeaderLayer<'a>>,
    deciding: HeaderLayer<'_>,
    retry_after: Option<Duration>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(6);
    if config.ietf {
        // One pass builds both lists; each is sized for a typical layer up front (the name,
        // quotes, two parameters of a few digits), so that a request costs two allocations.
        let layers = layers.into_iter();
        let room = layers.size_hint().0.max(1) * 40;
        let mut policy = String::with_capacity(room);
        let mut state = String::with_capacity(room);
        for (i, layer) in layers.enumerate() {
            if i > 0 {
                policy.push_str(", ");
                state.push_str(", ");
            }
            push_item(
                &mut policy,
                layer.rule,
                ";q=",
                layer.limit,
                ";w=",
                ceil_secs(layer.window),
            );
            push_item(
                &mut state,
                layer.rule,
                ";r=",
                layer.remaining,
                ";t=",
                ceil_secs(layer.reset_after),
            );
        }
        out.push(("RateLimit-Policy", policy));
        out.push(("RateLimit", state));
    }
    if config.legacy {
        out.push(("RateLimit-Limit", number(deciding.limit)));
        out.push(("RateLimit-Remaining", number(deciding.remaining)));
        out.push(("RateLimit-Reset", number(ceil_secs(deciding.reset_after))));
    }
    if let (true, Some(retry)) = (config.retry_after, retry_after) {
        out.push(("Retry-After", number(ceil_secs(retry))));
    }
    out
}

/// `"rule";<a><x>;<b><y>`: one list member of the IETF headers.
fn push_item(out: &mut String, rule: &str, a: &str, x: u64, b: &str, y: u64) {
    let mut digits = itoa::Buffer::new();
    out.push('"');
    out.push_str(rule);
    out.push('"');
    out.push_str(a);
    out.push_str(digits.format(x));
    out.push_str(b);
    out.push_str(digits.format(y));
}

/// A header value that is one number (formatted without the `fmt` machinery).
fn number(n: u64) -> String {
    itoa::Buffer::new().format(n).to_owned()
}

/// A [`Decision`] without its borrow of the engine: plain, owned data that a binding can keep
/// in a heap object (a Python or JavaScript value) after the call returns, and turn back into
/// a `Decision` with [`Engine::attach`](crate::Engine::attach) when it is asked for headers or
/// layers. Detaching copies about a hundred bytes and allocates nothing (up to three layers).
#[derive(Debug, Clone)]
pub struct DetachedDecision {
    allowed: bool,
    store: StoreUsed,
    headers: HeadersConfig,
    deciding: u16,
    layers: SmallVec<[Slot; 3]>,
    /// The keys' own limits, as in [`Decision`].
    owns: Option<Box<OwnLimits>>,
    /// Which engine's rules the indices refer to (the address of its rule table).
    rules_id: usize,
}

impl DetachedDecision {
    /// Whether the request may pass.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// Which store decided.
    pub fn store(&self) -> StoreUsed {
        self.store
    }

    /// The address of the rule table it was decided with (which generation of the engine's).
    pub(crate) fn rules_id(&self) -> usize {
        self.rules_id
    }

    /// The decision again, borrowing `rules` — the table of the engine that made it; `None`
    /// for another engine's table.
    pub(crate) fn attach<'e>(&self, rules: &'e [Rule]) -> Option<Decision<'e>> {
        (rules.as_ptr() as usize == self.rules_id).then(|| Decision {
            allowed: self.allowed,
            deciding: self.deciding,
            rules,
            layers: self.layers.clone(),
            headers: self.headers,
            store: self.store,
            held: None,
            owns: self.owns.clone(),
        })
    }
}

impl Decision<'_> {
    /// The decision as owned data, to keep beyond the engine borrow (see [`DetachedDecision`]).
    pub fn detach(&self) -> DetachedDecision {
        DetachedDecision {
            allowed: self.allowed,
            store: self.store,
            headers: self.headers,
            deciding: self.deciding,
            layers: self.layers.clone(),
            owns: self.owns.clone(),
            rules_id: self.rules.as_ptr() as usize,
        }
    }
}

/// `deciding` when no layer decides (none matched, or only shadow layers).
const NONE: u16 = u16::MAX;

fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1_000)).unwrap_or(u64::MAX)
}

fn ceil_secs(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}
