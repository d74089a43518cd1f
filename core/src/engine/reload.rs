//! [`Engine::reload`]: a new configuration put in force while requests flow.
//!
//! Everything is checked before anything changes: the rules compile, the `[http]` and
//! `[auth]` sections (key files and JWKS documents read), the services, the monitor's stream.
//! Then, under one lock, the store learns the new rules, the services are reconciled and the
//! new generation and snapshot go in. A request sees the old configuration or the new one,
//! never a mix: [`Engine::check`] reads one generation, [`Engine::http`] one snapshot.
//!
//! What carries over:
//!
//! - A rule with the same name and the same limits ([`Rule::fingerprint`]: key, policies,
//!   response counting) keeps its state — its counts, blocks and permits — even if it moved,
//!   matches other requests or left shadow mode. A rule whose limits changed starts afresh
//!   (on Redis under a new key name, [`Rule::stored_name`], so processes still on the old
//!   configuration keep their meaning), and so does a new one. A removed rule's state is
//!   forgotten in this process; its Redis keys expire.
//! - A permit or an exchange taken before the reload is released to the rules it was taken
//!   under.
//! - An upstream with the same service, breaker settings, name, URL and weight keeps its
//!   breaker, statistics and in-flight count.
//! - The monitor's aggregate goes on; a changed stream sink is replaced (the old one writes
//!   what it holds).
//!
//! What a reload refuses, naming the field: a different `[store]` (restart to move the
//! state), a different `monitor.horizon` or `monitor.top`, and adding, removing or changing a
//! rule that counts locally between syncs (`sync`).

use arc_swap::ArcSwap;

use super::Engine;
use super::live::{Live, Snapshot};
use crate::balance::ServicesChange;
use crate::config::{Config, StoreConfig};
use crate::error::Error;
use crate::http::{CompiledAccess, HttpSettings};
use crate::limit::Rule;

/// What a reload did to one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleChange {
    /// Exactly as it was (wherever it now stands in the list).
    Unchanged,
    /// Its limits are as they were, so its state is kept; what it matches or its shadow mode
    /// changed.
    Kept,
    /// Its limits changed: it starts afresh.
    Restarted,
    /// New: it starts afresh.
    Added,
    /// No longer configured: its state is forgotten.
    Removed,
}

impl RuleChange {
    /// `unchanged`, `kept`, `restarted`, `added` or `removed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleChange::Unchanged => "unchanged",
            RuleChange::Kept => "kept",
            RuleChange::Restarted => "restarted",
            RuleChange::Added => "added",
            RuleChange::Removed => "removed",
        }
    }
}

/// What [`Engine::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Every rule of the new configuration in its order, then the removed ones.
    pub rules: Vec<(String, RuleChange)>,
    /// What happened to the upstreams.
    pub upstreams: ServicesChange,
    /// Whether the `[auth]` section changed (the verified-token cache starts empty then).
    pub auth_changed: bool,
    /// How many generations of rules the engine keeps (see [`Engine::generations`]).
    pub generations: usize,
}

impl ReloadSummary {
    /// How many rules had `change`.
    pub fn count(&self, change: RuleChange) -> usize {
        self.rules.iter().filter(|(_, c)| *c == change).count()
    }

    /// The summary as a JSON object (what the bindings return):
    /// `{"rules":[{"name":…,"change":…}],"upstreams":{"kept":…,"started":…,"removed":…},
    /// "auth_changed":…,"generations":…}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "rules": self.rules.iter().map(|(name, change)| serde_json::json!({
                "name": name,
                "change": change.as_str(),
            })).collect::<Vec<_>>(),
            "upstreams": {
                "kept": self.upstreams.kept,
                "started": self.upstreams.started,
                "removed": self.upstreams.removed,
            },
            "auth_changed": self.auth_changed,
            "generations": self.generations,
        })
        .to_string()
    }
}

/// The parts of the configuration in force that a reload compares against.
#[derive(Debug)]
pub(crate) struct Applied {
    store: StoreConfig,
    auth: Option<crate::auth::AuthConfig>,
    http: crate::http::HttpConfig,
    headers: crate::config::HeadersConfig,
}

impl Applied {
    pub(crate) fn of(config: &Config) -> Self {
        Applied {
            store: config.store.clone(),
            auth: config.auth.clone(),
            http: config.http.clone(),
            headers: config.headers,
        }
    }
}

impl Engine {
    /// Puts `config` in force while the engine serves: rules, `[http]`, `[headers]`, `[auth]`,
    /// services and the monitor's stream, all at once (see the module docs for what carries
    /// over). On error nothing changes, and the error names the field.
    ///
    /// ```
    /// use floodwall::{Engine, Request, RuleChange, Timestamp};
    ///
    /// let rule = |limit| format!(r#"
    ///     [[rules]]
    ///     name = "per-user"
    ///     key = "subject"
    ///     algorithm = "fixed_window"
    ///     limit = {limit}
    ///     window = "1m"
    /// "#);
    /// let engine = Engine::from_toml(&rule(2))?;
    /// let bob = Request::new("GET", "/").subject("bob").at(Timestamp::from_millis(60_000));
    /// assert_eq!(engine.check(&bob)?.remaining(), Some(1));
    ///
    /// // The same limits: the count carries over.
    /// let same = engine.reload_toml(&rule(2))?;
    /// assert_eq!(same.rules, [("per-user".to_owned(), RuleChange::Unchanged)]);
    /// assert_eq!(engine.check(&bob)?.remaining(), Some(0));
    ///
    /// // A new limit: the rule starts afresh.
    /// engine.reload_toml(&rule(5))?;
    /// assert_eq!(engine.check(&bob)?.remaining(), Some(4));
    ///
    /// // An invalid configuration changes nothing.
    /// let error = engine.reload_toml(&rule(0)).unwrap_err();
    /// assert_eq!(error.field(), Some("rules[0].limit"));
    /// assert_eq!(engine.check(&bob)?.remaining(), Some(3));
    /// # Ok::<(), floodwall::Error>(())
    /// ```
    pub fn reload(&self, config: Config) -> Result<ReloadSummary, Error> {
        // One reload at a time; the checks below read what is in force.
        let mut applied = self.reloading.lock();
        config.store.check()?;
        if config.store != applied.store {
            return Err(Error::config(
                "store",
                "a reload cannot change the store (its state would not follow): restart the engine to change it",
            ));
        }
        let http = HttpSettings::compile(&config.http)?;
        let access = super::compile_access(&config)?;
        let compiled = config.compile_rules()?;
        if config.store.shared().is_some() {
            super::store::check_redis_arithmetic(&compiled)?;
        }
        let auth_changed = config.auth != applied.auth;
        let auth = if auth_changed {
            super::build_auth(config.auth.as_ref(), self.base_dir.as_deref())?
        } else {
            self.snapshot.load().auth.clone()
        };
        let services = self.services.prepare(&config.services, &self.monitor)?;
        let sink = self.monitor.prepare(&config.monitor, &config.store)?;

        let old = self.live();
        let (rules, changes, forget) = place(&old.rules, compiled)?;
        let unchanged = changes.iter().all(|(_, c)| *c == RuleChange::Unchanged)
            && config.http == applied.http
            && config.headers == applied.headers;

        // Checked: from here on nothing fails.
        let upstreams = self.services.apply(services);
        self.monitor.reload(&config.monitor, sink);
        let live_id = if unchanged {
            old.id
        } else {
            self.store.reload(&rules, &forget);
            self.monitor.set_case_folding(http.fold_case);
            self.gens.install(Live::new(rules, config.headers, http)).id
        };
        let access =
            if config.http.allow == applied.http.allow && config.http.deny == applied.http.deny {
                // Lists set by `set_access_lists` since stay in force.
                std::sync::Arc::clone(&self.snapshot.load().access)
            } else {
                std::sync::Arc::new(access)
            };
        store_snapshot(&self.snapshot, live_id, auth, access);
        *applied = Applied::of(&config);
        // What a waiter waits for may have changed: every one asks again.
        self.lines.released();
        Ok(ReloadSummary {
            rules: changes,
            upstreams,
            auth_changed,
            generations: self.gens.count(),
        })
    }

    /// [`reload`](Self::reload) from a TOML document.
    pub fn reload_toml(&self, text: &str) -> Result<ReloadSummary, Error> {
        self.reload(self.with_base_dir(Config::from_toml(text)?))
    }

    /// [`reload`](Self::reload) from a JSON document.
    pub fn reload_json(&self, text: &str) -> Result<ReloadSummary, Error> {
        self.reload(self.with_base_dir(Config::from_json(text)?))
    }

    /// [`reload`](Self::reload) from a file: JSON if it ends in `.json`, TOML otherwise;
    /// relative names in it resolve against its directory.
    pub fn reload_file(&self, path: impl AsRef<std::path::Path>) -> Result<ReloadSummary, Error> {
        let path = path.as_ref();
        self.reload(Config::from_file(path)?)
            .map_err(|e| e.in_file(path))
    }

    /// How many generations of rules the engine keeps: 1, plus one per reload that changed
    /// the rules, `[http]` or `[headers]`. Each is kept until the engine is dropped, so that
    /// decisions taken under it stay valid however long they are held (a few kilobytes each
    /// for a typical configuration).
    pub fn generations(&self) -> usize {
        self.gens.count()
    }

    /// `config` reading relative file names where the engine's configuration did.
    fn with_base_dir(&self, mut config: Config) -> Config {
        if config.base_dir.is_none() {
            config.base_dir.clone_from(&self.base_dir);
        }
        config
    }
}

/// Puts a new snapshot in force.
fn store_snapshot(
    snapshots: &ArcSwap<Snapshot>,
    live: u64,
    auth: Option<std::sync::Arc<crate::auth::Authenticator>>,
    access: std::sync::Arc<CompiledAccess>,
) {
    snapshots.store(std::sync::Arc::new(Snapshot { live, auth, access }));
}

/// Gives each of `next` its state: an unchanged rule (same name, same fingerprint) the one it
/// had, any other one no rule of `old` or `next` holds (so that a request still deciding under
/// `old` never counts into a new rule's state), or else one a removed rule held. Returns the
/// placed rules, what happened to each rule, and the states to forget.
#[allow(clippy::type_complexity)]
fn place(
    old: &[Rule],
    next: Vec<Rule>,
) -> Result<(Vec<Rule>, Vec<(String, RuleChange)>, Vec<u32>), Error> {
    let max = crate::common::MAX_RULES as u32;
    let mut changes = Vec::with_capacity(next.len());
    let mut held: Vec<Option<u32>> = Vec::with_capacity(next.len());
    for (i, rule) in next.iter().enumerate() {
        let before = old.iter().find(|o| o.name() == rule.name());
        let same_limits = before.filter(|o| o.fingerprint() == rule.fingerprint());
        if let Some(o) = before
            && (o.sync_interval().is_some() || rule.sync_interval().is_some())
            && (same_limits.is_none() || o.sync_interval() != rule.sync_interval())
        {
            return Err(sync_refused(i));
        }
        if before.is_none() && rule.sync_interval().is_some() {
            return Err(sync_refused(i));
        }
        let change = match (before, same_limits) {
            (None, _) => RuleChange::Added,
            (Some(_), None) => RuleChange::Restarted,
            (Some(o), Some(_)) if *o == rule.clone().placed(o.state()) => RuleChange::Unchanged,
            (Some(_), Some(_)) => RuleChange::Kept,
        };
        held.push(same_limits.map(Rule::state));
        changes.push((rule.name().to_owned(), change));
    }
    for o in old {
        if !next.iter().any(|r| r.name() == o.name()) {
            if o.sync_interval().is_some() {
                return Err(Error::config(
                    "rules",
                    format!(
                        "rule {:?} counts locally between syncs (sync): a reload cannot remove it; restart the engine",
                        o.name()
                    ),
                ));
            }
            changes.push((o.name().to_owned(), RuleChange::Removed));
        }
    }
    let kept: Vec<u32> = held.iter().flatten().copied().collect();
    let forget: Vec<u32> = old
        .iter()
        .map(Rule::state)
        .filter(|s| !kept.contains(s))
        .collect();
    let mut taken: Vec<u32> = kept.clone();
    let mut placed = Vec::with_capacity(next.len());
    for (rule, state) in next.into_iter().zip(held) {
        let state = match state {
            Some(state) => state,
            None => {
                let free = |s: &u32| !taken.contains(s);
                let state = (0..max)
                    .find(|s| free(s) && !old.iter().any(|o| o.state() == *s))
                    .or_else(|| (0..max).find(free))
                    .unwrap_or(0);
                taken.push(state);
                state
            }
        };
        placed.push(rule.placed(state));
    }
    Ok((placed, changes, forget))
}

fn sync_refused(index: usize) -> Error {
    Error::config(
        format!("rules[{index}].sync"),
        "a reload cannot add, remove or change a rule that counts locally between syncs (sync): restart the engine",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml: &str) -> Vec<Rule> {
        Config::from_toml(toml).unwrap().compile_rules().unwrap()
    }

    const A: &str = r#"[[rules]]
name = "a"
key = "subject"
algorithm = "fixed_window"
limit = 1
window = "1m"
"#;
    const B: &str = r#"[[rules]]
name = "b"
key = "ip"
algorithm = "token_bucket"
capacity = 5
refill_rate = 1.0
"#;

    #[test]
    fn kept_rules_keep_their_state_and_new_ones_take_a_state_nobody_held() {
        let old: Vec<Rule> = rules(&format!("{A}{B}"))
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.placed(i as u32))
            .collect();
        // b first now, a changed, c new.
        let next = rules(&format!(
            "{B}{}[[rules]]\nname = \"c\"\nkey = \"ip\"\nalgorithm = \"fixed_window\"\nlimit = 3\nwindow = \"1s\"\n",
            A.replace("limit = 1", "limit = 2")
        ));
        let (placed, changes, forget) = place(&old, next).unwrap();
        assert_eq!(placed[0].state(), 1, "b keeps its state");
        assert_eq!(
            placed[1].state(),
            2,
            "a restarted takes a state no rule held"
        );
        assert_eq!(placed[2].state(), 3);
        assert_eq!(forget, [0], "a's old state is forgotten");
        assert_eq!(
            changes.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
            [
                RuleChange::Unchanged,
                RuleChange::Restarted,
                RuleChange::Added
            ]
        );
        assert_ne!(placed[1].stored_name(), old[0].stored_name());
        assert_eq!(placed[0].stored_name(), old[1].stored_name());
    }

    #[test]
    fn a_rule_that_only_matches_differently_is_kept() {
        let old: Vec<Rule> = rules(A).into_iter().map(|r| r.placed(0)).collect();
        let next = rules(&format!(
            "{A}match = {{ paths = [\"/api/*\"] }}\nshadow = true\n"
        ));
        let (placed, changes, forget) = place(&old, next).unwrap();
        assert_eq!(changes, [("a".to_owned(), RuleChange::Kept)]);
        assert_eq!(placed[0].state(), 0);
        assert!(forget.is_empty());
    }

    #[test]
    fn every_state_taken_recycles_a_removed_one() {
        let many = |prefix: &str| -> String {
            (0..crate::common::MAX_RULES)
                .map(|i| A.replace("name = \"a\"", &format!("name = \"{prefix}{i}\"")))
                .collect()
        };
        let old: Vec<Rule> = rules(&many("x"))
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.placed(i as u32))
            .collect();
        let (placed, changes, forget) = place(&old, rules(&many("y"))).unwrap();
        assert_eq!(forget.len(), crate::common::MAX_RULES);
        let mut states: Vec<u32> = placed.iter().map(Rule::state).collect();
        states.sort_unstable();
        states.dedup();
        assert_eq!(
            states.len(),
            crate::common::MAX_RULES,
            "every rule its own state"
        );
        assert_eq!(changes.len(), 2 * crate::common::MAX_RULES);
    }
}
