//! Which requests a rule applies to, and what it counts them by.
//!
//! Compiled once at load: methods are upper-cased, path patterns split into segments and
//! their literal segments put in the normal form of [`crate::http::normalize_path`] (lower-cased
//! unless `http.case_sensitive`), header names lower-cased. Matching a request allocates
//! nothing.
//!
//! Paths are matched in normal form (the engine normalises every request's path first), split
//! on `/`. In a pattern, a literal segment matches the same segment; `*`, `:name` and `{name}`
//! match exactly one segment; `**` matches any number of segments, including none. A rule
//! whose methods list `GET` matches `HEAD` too unless `http.head_as_get` is off.

mod matcher;
mod path;
mod response;

use std::time::Duration;

use super::Quota;
use crate::common::same_text;

pub(crate) use matcher::is_token;
pub use matcher::{KeyKind, RuleMatcher};
pub use path::{PathPattern, RequestPath};
pub use response::{CountResponses, ResponseCounting, StatusSet};

/// Role overrides a rule scans; with more it looks the role up in a hash map.
const FEW_ROLES: usize = 8;

/// Each role's index in a rule's policies.
type RoleIndex = std::collections::HashMap<Box<str>, usize, foldhash::fast::FixedState>;

/// The parameters one role (or the default) is judged by within a rule. Each policy of a rule
/// counts in its own counter: premium callers of a `global` rule with a premium override draw
/// from a pool separate from everyone else's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    role: Option<Box<str>>,
    quota: Quota,
}

impl Policy {
    /// The policy of `role` (`None` for the rule's default).
    pub fn new(role: Option<Box<str>>, quota: Quota) -> Self {
        Policy { role, quota }
    }

    /// The role this policy overrides for, or `None` for the rule's default.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// The algorithm and parameters.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }
}

/// A compiled rule: which requests it matches, what it counts them by, and its policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    name: Box<str>,
    matcher: RuleMatcher,
    key: KeyKind,
    /// The default first, then one per role override.
    policies: Box<[Policy]>,
    /// With more than [`FEW_ROLES`] overrides, each role's index in `policies`.
    by_role: Option<RoleIndex>,
    before_auth: bool,
    shadow: bool,
    response: ResponseCounting,
    /// Counted locally and reconciled with the shared store this often (`None`: exact).
    sync: Option<Duration>,
    /// Which state the rule counts in (see [`Rule::state`]).
    state: u32,
    /// The name stores know its state by: `NAME@FINGERPRINT` (see [`Rule::stored_name`]).
    stored: Box<str>,
}

impl Rule {
    /// A rule; `policies[0]` is the default (its role is ignored), the rest override by role.
    pub fn new(name: Box<str>, matcher: RuleMatcher, key: KeyKind, policies: Vec<Policy>) -> Self {
        assert!(!policies.is_empty(), "a rule needs its default policy");
        let by_role = (policies.len() > FEW_ROLES + 1).then(|| {
            let mut map = RoleIndex::with_capacity_and_hasher(
                policies.len() - 1,
                foldhash::fast::FixedState::default(),
            );
            // The first override of a role is the one that applies, as in a scan.
            for (i, p) in policies.iter().enumerate().skip(1) {
                if let Some(role) = &p.role {
                    map.entry(role.clone()).or_insert(i);
                }
            }
            map
        });
        Rule {
            name,
            matcher,
            key,
            policies: policies.into(),
            by_role,
            before_auth: false,
            shadow: false,
            response: ResponseCounting::default(),
            sync: None,
            state: 0,
            stored: Box::from(""),
        }
        .placed(0)
    }

    /// The same rule counting in state `state` (below [`MAX_RULES`](crate::common::MAX_RULES)):
    /// the engine numbers its rules' states, and a reload gives an unchanged rule the number it
    /// had.
    pub(crate) fn placed(mut self, state: u32) -> Self {
        self.state = state;
        self.stored = format!("{}@{:08x}", self.name, self.fingerprint()).into();
        self
    }

    /// Which state the rule counts in: its index in configuration order when the engine was
    /// built; kept across reloads while its limits do not change.
    pub fn state(&self) -> u32 {
        self.state
    }

    /// What the rule's state means, in 32 bits (FNV-1a): its key, its policies (roles,
    /// algorithms, limits, windows, blocking) and what it does with responses. A reload that
    /// changes any of them starts the rule afresh; one that changes only which requests it
    /// matches, or its shadow mode, keeps its counts.
    pub fn fingerprint(&self) -> u32 {
        let text = format!("{:?}|{:?}|{:?}", self.key, self.policies, self.response);
        let mut hash: u32 = 0x811c_9dc5;
        for byte in text.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        hash
    }

    /// The name stores know the rule's state by, `NAME@FINGERPRINT`: processes sharing a
    /// Redis store share a rule's counts only while they agree on its limits.
    pub fn stored_name(&self) -> &str {
        &self.stored
    }

    /// The same rule, decided by the HTTP layer before the bearer token is verified (see
    /// [`crate::http`]).
    pub fn before_auth(mut self, before_auth: bool) -> Self {
        self.before_auth = before_auth;
        self
    }

    /// The same rule in shadow mode: it decides and counts, but never denies.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// The same rule with what it does once the response is known.
    pub fn responses(mut self, response: ResponseCounting) -> Self {
        self.response = response;
        let state = self.state;
        self.placed(state)
    }

    /// The same rule counted locally between syncs with a shared store, every `interval`
    /// (`None`: every decision asks the store; see [`crate::store`]).
    pub fn synced(mut self, interval: Option<Duration>) -> Self {
        self.sync = interval;
        self
    }

    /// How often a shared store reconciles its local count, if it counts locally.
    pub fn sync_interval(&self) -> Option<Duration> {
        self.sync
    }

    /// Whether the HTTP layer decides it before verifying the token.
    pub fn is_before_auth(&self) -> bool {
        self.before_auth
    }

    /// Whether it is in shadow mode.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// What it does once the response is known.
    pub fn response_counting(&self) -> &ResponseCounting {
        &self.response
    }

    /// Whether the rule limits requests in progress (`concurrency`): an admission holds its
    /// cost until released.
    pub fn holds(&self) -> bool {
        self.response.count == CountResponses::Released
    }

    /// The rule's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which requests it matches.
    pub fn matcher(&self) -> &RuleMatcher {
        &self.matcher
    }

    /// What it counts by.
    pub fn key(&self) -> &KeyKind {
        &self.key
    }

    /// The default policy first, then the role overrides.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The policy for `role` and its index in [`policies`](Rule::policies).
    #[inline]
    pub fn policy_for(&self, role: Option<&str>) -> (usize, &Policy) {
        if let Some(role) = role
            && self.policies.len() > 1
            && let Some(i) = self.override_of(role)
        {
            return (i, &self.policies[i]);
        }
        (0, &self.policies[0])
    }

    /// The index in `policies` of `role`'s override: a scan of a few (lengths first), a
    /// lookup among many.
    #[inline]
    fn override_of(&self, role: &str) -> Option<usize> {
        if let Some(map) = &self.by_role {
            return look_up(map, role);
        }
        self.policies[1..]
            .iter()
            .position(|p| p.role.as_deref().is_some_and(|r| same_text(r, role)))
            .map(|i| i + 1)
    }
}

/// A role's index among many overrides (kept out of line, so that the scan of a few inlines).
#[inline(never)]
fn look_up(map: &RoleIndex, role: &str) -> Option<usize> {
    map.get(role).copied()
}
