//! One `[[rules]]` entry, checked and compiled into a [`Rule`].

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use serde::Deserialize;

use super::{Config, HumanDuration, MAX_ROLE_OVERRIDES};

/// How long a `concurrency` permit is held at the longest unless `max_hold` says.
pub const DEFAULT_MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

/// One day, the length of a calendar day's `window`.
const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
use crate::error::Error;
use crate::limit::{
    Algorithm, Calendar, CalendarUnit, CountResponses, KeyKind, PathPattern, Policy, Quota,
    ResponseCounting, Rule, RuleMatcher, StatusSet, is_token,
};

/// One `[[rules]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A unique name of letters, digits and `_.:-`; it names the rule in decisions and headers.
    pub name: String,
    /// Which requests the rule applies to; omitted, all of them.
    #[serde(rename = "match", default)]
    pub matching: MatchConfig,
    /// What to count by: `subject`, `ip`, `endpoint`, `global` or `header:NAME`.
    pub key: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Requests (cost units) per window, for the window algorithms.
    #[serde(default)]
    pub limit: Option<u64>,
    /// The window, for the window algorithms: a duration, or with `align = "calendar"` one
    /// of `"1d"`, `"1w"` and `"1mo"`.
    #[serde(default)]
    pub window: Option<WindowLength>,
    /// Where a `fixed_window`'s windows start: `epoch` (every `window` from the Unix epoch,
    /// the default) or `calendar` (the days, weeks or months of `timezone`).
    #[serde(default)]
    pub align: Align,
    /// The IANA time zone of calendar windows (`align = "calendar"`), e.g. `"Europe/Berlin"`;
    /// `"UTC"` by default.
    #[serde(default)]
    pub timezone: Option<String>,
    /// How long a `concurrency` rule's permit is held at the longest, when nothing releases
    /// it (a process that died holding it); one minute by default.
    #[serde(default)]
    pub max_hold: Option<HumanDuration>,
    /// The burst size, for `token_bucket`.
    #[serde(default)]
    pub capacity: Option<u64>,
    /// Tokens per second, for `token_bucket`.
    #[serde(default)]
    pub refill_rate: Option<f64>,
    /// Parameters for callers with a given role, overriding some or all of the rule's own.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleOverride>,
    /// Decided by the HTTP layer before the bearer token is verified, so that a flood of bad
    /// tokens is refused without a signature check each. Not for rules keyed on `subject`
    /// or restricted to roles (no caller is known yet).
    #[serde(default)]
    pub before_auth: bool,
    /// Shadow mode: the rule decides, counts and records what it would deny, but never denies.
    #[serde(default)]
    pub shadow: bool,
    /// Which responses stay counted: `all`, `failed` or `successful` (the others are refunded
    /// once the HTTP layer hears the status).
    #[serde(default)]
    pub count_responses: CountResponses,
    /// The statuses that are failures (codes and `"from-to"` ranges); `["400-599"]` by default.
    #[serde(default)]
    pub failed_statuses: Option<Vec<StatusItem>>,
    /// A response header whose integer value is added to the rule's count once the response
    /// is known (the cost a request turned out to have).
    #[serde(default)]
    pub cost_header: Option<String>,
    /// On a shared store, count locally and reconcile with Redis every `sync` (for example
    /// `"100ms"`) instead of asking Redis on every decision; `fixed_window` and
    /// `sliding_window_counter` only (see `crate::store::synced` for what it admits).
    #[serde(default)]
    pub sync: Option<HumanDuration>,
    /// Once the rule denies a key (`block_after` times within one window), deny that key
    /// outright for this long (for example `"15m"`); see [`crate::limit::Block`].
    #[serde(default)]
    pub block_for: Option<HumanDuration>,
    /// How many denials within one of the rule's windows start a block (`block_for`); 1 by
    /// default.
    #[serde(default)]
    pub block_after: Option<u64>,
    /// Its keys may be given limits of their own for a while
    /// ([`Engine::set_key_limit`](crate::Engine::set_key_limit)): each decision of the rule
    /// then looks for its key's (on Redis, one more key read in the script).
    #[serde(default)]
    pub key_limits: bool,
}

/// Where a fixed window's windows start (`align`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Align {
    /// Every `window` from the Unix epoch.
    #[default]
    Epoch,
    /// The calendar's days, weeks or months in `timezone`.
    Calendar,
}

/// A rule's `window` as written: a duration (`"1s"`, `"1d"`, `"1w"`), or a calendar month
/// (`"1mo"`, with `align = "calendar"` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowLength {
    /// A fixed length.
    Length(HumanDuration),
    /// One calendar month.
    Month,
}

impl<'de> Deserialize<'de> for WindowLength {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WindowLength;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string such as \"1s\" or \"1d\", or \"1mo\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WindowLength, E> {
                if matches!(v.trim(), "1mo" | "month") {
                    return Ok(WindowLength::Month);
                }
                HumanDuration::parse(v)
                    .map(WindowLength::Length)
                    .map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// One entry of `failed_statuses`: a status code, or a range `"500-599"` (or `"5xx"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusItem {
    /// One status.
    Code(i64),
    /// A range, `"from-to"` or `"Nxx"`.
    Range(String),
}

/// The HTTP methods a rule may match (RFC 9110 §9 and PATCH, RFC 5789).
pub const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The `match` table of a rule. An empty or omitted list matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// HTTP methods, any case.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path patterns: literal segments, `*`/`:name`/`{name}` for one segment, `**` for any.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Roles; a request without a role matches no rule that lists roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Per-role parameters of a rule; omitted ones are the rule's own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleOverride {
    /// See [`RuleConfig::limit`].
    #[serde(default)]
    pub limit: Option<u64>,
    /// See [`RuleConfig::window`].
    #[serde(default)]
    pub window: Option<WindowLength>,
    /// See [`RuleConfig::capacity`].
    #[serde(default)]
    pub capacity: Option<u64>,
    /// See [`RuleConfig::refill_rate`].
    #[serde(default)]
    pub refill_rate: Option<f64>,
}

impl RuleConfig {
    pub(super) fn compile(&self, at: &str, config: &Config) -> Result<Rule, Error> {
        let http = &config.http;
        let fold_case = !http.case_sensitive;
        let name = self.name.as_str();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            return Err(Error::config(
                format!("{at}.name"),
                format!("rule name {name:?} must be 1 to 64 letters, digits or _ . : -"),
            ));
        }
        let key = KeyKind::parse(&self.key).map_err(|m| Error::config(format!("{at}.key"), m))?;

        let mut methods = Vec::new();
        for (i, method) in self.matching.methods.iter().enumerate() {
            let upper = method.to_ascii_uppercase();
            if !is_token(method) || !HTTP_METHODS.contains(&upper.as_str()) {
                return Err(Error::config(
                    format!("{at}.match.methods[{i}]"),
                    format!(
                        "{method:?} is not an HTTP method; use one of {}",
                        HTTP_METHODS.join(", ")
                    ),
                ));
            }
            methods.push(upper.into_boxed_str());
        }
        let mut paths = Vec::new();
        for (i, pattern) in self.matching.paths.iter().enumerate() {
            paths.push(
                PathPattern::parse_folded(pattern, fold_case)
                    .map_err(|m| Error::config(format!("{at}.match.paths[{i}]"), m))?,
            );
        }
        let mut roles = Vec::new();
        for (i, role) in self.matching.roles.iter().enumerate() {
            if role.is_empty() {
                return Err(Error::config(
                    format!("{at}.match.roles[{i}]"),
                    "a role name must not be empty",
                ));
            }
            roles.push(role.clone().into_boxed_str());
        }

        if self.max_hold.is_some() && self.algorithm != Algorithm::Concurrency {
            return Err(Error::config(
                format!("{at}.max_hold"),
                format!(
                    "{} has no permits to hold; max_hold is for concurrency",
                    self.algorithm
                ),
            ));
        }
        let base = Params {
            max_hold: self.max_hold,
            limit: self.limit,
            window: self.window,
            capacity: self.capacity,
            refill_rate: self.refill_rate,
        };
        let calendar = self.calendar(at)?;
        let default = base.quota(self.algorithm, at, None, calendar)?;
        if self.roles.len() > MAX_ROLE_OVERRIDES {
            return Err(Error::config(
                format!("{at}.roles"),
                format!(
                    "{} role overrides given; at most {MAX_ROLE_OVERRIDES} are allowed",
                    self.roles.len()
                ),
            ));
        }
        // The roles a caller can have: those a token can carry when `auth.roles` lists them
        // (and the default role), narrowed to the rule's own `match.roles`.
        let known_roles: Option<Vec<&str>> = config
            .auth
            .as_ref()
            .filter(|a| !a.roles.is_empty())
            .map(|a| {
                a.roles
                    .iter()
                    .map(String::as_str)
                    .chain(a.default_role.as_deref())
                    .collect()
            });
        let mut overrides = Vec::with_capacity(self.roles.len());
        for (role, o) in &self.roles {
            let at_role = format!("{at}.roles.{role}");
            if role.is_empty() {
                return Err(Error::config(at_role, "a role name must not be empty"));
            }
            if !self.matching.roles.is_empty() && !self.matching.roles.contains(role) {
                return Err(Error::config(
                    at_role,
                    format!(
                        "the rule only matches the roles {:?} (match.roles), so an override for {role:?} could never apply",
                        self.matching.roles
                    ),
                ));
            }
            if let Some(known) = &known_roles
                && !known.contains(&role.as_str())
            {
                return Err(Error::config(
                    at_role,
                    format!(
                        "{role:?} is not a role a caller can have: auth.roles lists {:?}{}",
                        config
                            .auth
                            .as_ref()
                            .map(|a| a.roles.clone())
                            .unwrap_or_default(),
                        config
                            .auth
                            .as_ref()
                            .and_then(|a| a.default_role.as_deref())
                            .map(|d| format!(" and the default role is {d:?}"))
                            .unwrap_or_default()
                    ),
                ));
            }
            let params = Params {
                max_hold: base.max_hold,
                limit: o.limit.or(base.limit),
                window: o.window.or(base.window),
                capacity: o.capacity.or(base.capacity),
                refill_rate: o.refill_rate.or(base.refill_rate),
            };
            // Fields the override sets that the algorithm does not take are errors too.
            Params {
                max_hold: None,
                limit: o.limit,
                window: o.window,
                capacity: o.capacity,
                refill_rate: o.refill_rate,
            }
            .check_applicable(self.algorithm, &at_role)?;
            let quota = params.quota(self.algorithm, &at_role, Some(&base), calendar)?;
            overrides.push((role.clone().into_boxed_str(), quota));
        }
        let policies: Vec<Policy> = std::iter::once(Policy::new(None, default))
            .chain(
                overrides
                    .into_iter()
                    .map(|(role, quota)| Policy::new(Some(role), quota)),
            )
            .collect();
        if self.before_auth {
            let why = if key == KeyKind::Subject {
                Some("a rule keyed on subject cannot be decided before the token names one")
            } else if !self.matching.roles.is_empty() || !self.roles.is_empty() {
                Some(
                    "a rule with roles (match.roles or role overrides) cannot be decided before the token names the role",
                )
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Error::config(format!("{at}.before_auth"), why));
            }
        }
        let mut failed = StatusSet::empty();
        match &self.failed_statuses {
            None => failed = StatusSet::default(),
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let (from, to) = status_range(item)
                        .map_err(|m| Error::config(format!("{at}.failed_statuses[{i}]"), m))?;
                    failed = failed.with_range(from, to);
                }
            }
        }
        if self.failed_statuses.is_some() && self.count_responses == CountResponses::All {
            return Err(Error::config(
                format!("{at}.failed_statuses"),
                "has no effect unless count_responses is \"failed\" or \"successful\"",
            ));
        }
        let cost_header = match &self.cost_header {
            None => None,
            Some(name) if is_token(name) => Some(name.to_ascii_lowercase().into_boxed_str()),
            Some(name) => {
                return Err(Error::config(
                    format!("{at}.cost_header"),
                    format!("{name:?} is not an HTTP header name"),
                ));
            }
        };
        let sync = self.sync_interval(at, self.algorithm, &policies)?;
        let policies = self.blocking(at, policies)?;
        if self.key_limits && self.sync.is_some() {
            return Err(Error::config(
                format!("{at}.key_limits"),
                "a rule that counts locally (sync) cannot take key limits: its processes decide without Redis; drop sync or key_limits",
            ));
        }
        let policies: Vec<Policy> = policies
            .into_iter()
            .map(|p| {
                let quota = p.quota().with_key_limits(self.key_limits);
                Policy::new(p.role().map(Into::into), quota)
            })
            .collect();
        let count = if self.algorithm == Algorithm::Concurrency {
            let counted = [
                (
                    "count_responses",
                    self.count_responses != CountResponses::All,
                ),
                ("failed_statuses", self.failed_statuses.is_some()),
                ("cost_header", cost_header.is_some()),
            ];
            if let Some((field, _)) = counted.iter().find(|(_, set)| *set) {
                return Err(Error::config(
                    format!("{at}.{field}"),
                    "a concurrency rule gives back every request when its response ends; it counts no responses",
                ));
            }
            CountResponses::Released
        } else {
            self.count_responses
        };
        Ok(Rule::new(
            name.into(),
            RuleMatcher::new(methods, paths, roles).head_as_get(http.head_as_get),
            key,
            policies,
        )
        .before_auth(self.before_auth)
        .shadow(self.shadow || http.shadow)
        .responses(ResponseCounting {
            count,
            failed,
            cost_header,
        })
        .synced(sync))
    }

    /// The calendar of `align = "calendar"` (its unit set by each policy's window), checked.
    fn calendar(&self, at: &str) -> Result<Option<Calendar>, Error> {
        if self.align == Align::Epoch {
            if self.timezone.is_some() {
                return Err(Error::config(
                    format!("{at}.timezone"),
                    "timezone needs align = \"calendar\" (windows from the epoch have no time zone)",
                ));
            }
            return Ok(None);
        }
        if self.algorithm != Algorithm::FixedWindow {
            return Err(Error::config(
                format!("{at}.align"),
                format!(
                    "calendar windows are fixed windows; {} cannot align to the calendar",
                    self.algorithm
                ),
            ));
        }
        if self.sync.is_some() {
            return Err(Error::config(
                format!("{at}.sync"),
                "a calendar window cannot count locally (sync); drop sync",
            ));
        }
        let zone = self.timezone.as_deref().unwrap_or("UTC");
        Calendar::new(CalendarUnit::Day, zone)
            .map(Some)
            .map_err(|m| Error::config(format!("{at}.timezone"), m))
    }

    /// `policies`, blocking keys as `block_for` and `block_after` say.
    fn blocking(&self, at: &str, policies: Vec<Policy>) -> Result<Vec<Policy>, Error> {
        let Some(HumanDuration(duration)) = self.block_for else {
            if self.block_after.is_some() {
                return Err(Error::config(
                    format!("{at}.block_after"),
                    "block_after needs block_for (how long a key is blocked)",
                ));
            }
            return Ok(policies);
        };
        if self.sync.is_some() {
            return Err(Error::config(
                format!("{at}.block_for"),
                "a rule that counts locally (sync) cannot block: its denials are not seen by the other processes; drop sync or block_for",
            ));
        }
        let after = match self.block_after {
            None => std::num::NonZeroU32::MIN,
            Some(n) => u32::try_from(n)
                .ok()
                .and_then(std::num::NonZeroU32::new)
                .ok_or_else(|| {
                    Error::config(
                        format!("{at}.block_after"),
                        format!("block_after must be from 1 to {}, got {n}", u32::MAX),
                    )
                })?,
        };
        policies
            .into_iter()
            .map(|p| {
                let quota = p
                    .quota()
                    .blocking(duration, after)
                    .map_err(|e| Error::config(format!("{at}.block_for"), e.message()))?;
                Ok(Policy::new(p.role().map(Into::into), quota))
            })
            .collect()
    }

    /// `sync`, checked: a window algorithm that counts (a log and a bucket's time cannot be
    /// summed over processes), at least a millisecond and shorter than every window.
    fn sync_interval(
        &self,
        at: &str,
        algorithm: Algorithm,
        policies: &[Policy],
    ) -> Result<Option<std::time::Duration>, Error> {
        let Some(HumanDuration(interval)) = self.sync else {
            return Ok(None);
        };
        let field = format!("{at}.sync");
        if !matches!(
            algorithm,
            Algorithm::FixedWindow | Algorithm::SlidingWindowCounter
        ) {
            return Err(Error::config(
                field,
                format!(
                    "{algorithm} cannot count locally between syncs (its state is not a count that processes can add up); use fixed_window or sliding_window_counter, or drop sync"
                ),
            ));
        }
        if interval < std::time::Duration::from_millis(1) {
            return Err(Error::config(field, "sync must be at least 1ms"));
        }
        if let Some(policy) = policies.iter().find(|p| p.quota().period() <= interval) {
            return Err(Error::config(
                field,
                format!(
                    "sync ({interval:?}) must be shorter than the window ({:?}{})",
                    policy.quota().period(),
                    policy
                        .role()
                        .map(|r| format!(" for role {r:?}"))
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(Some(interval))
    }
}

/// One `failed_statuses` entry as an inclusive range of statuses.
fn status_range(item: &StatusItem) -> Result<(u16, u16), String> {
    let status = |n: i64| -> Result<u16, String> {
        u16::try_from(n)
            .ok()
            .filter(|s| (100..=999).contains(s))
            .ok_or_else(|| format!("{n} is not an HTTP status (100 to 999)"))
    };
    match item {
        StatusItem::Code(n) => status(*n).map(|s| (s, s)),
        StatusItem::Range(text) => {
            let t = text.trim();
            if t.len() == 3 && t.ends_with("xx") && t.as_bytes()[0].is_ascii_digit() {
                let class = i64::from(t.as_bytes()[0] - b'0');
                return Ok((status(class * 100)?, status(class * 100 + 99)?));
            }
            let parse = |s: &str| -> Result<u16, String> {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| {
                        format!("{text:?} is not a status, a range \"500-599\" or a class \"5xx\"")
                    })
                    .and_then(status)
            };
            match t.split_once('-') {
                Some((a, b)) => {
                    let (from, to) = (parse(a)?, parse(b)?);
                    if from > to {
                        return Err(format!("{text:?}: the range runs backwards"));
                    }
                    Ok((from, to))
                }
                None => parse(t).map(|s| (s, s)),
            }
        }
    }
}

struct Params {
    max_hold: Option<HumanDuration>,
    limit: Option<u64>,
    window: Option<WindowLength>,
    capacity: Option<u64>,
    refill_rate: Option<f64>,
}

impl Params {
    fn check_applicable(&self, algorithm: Algorithm, at: &str) -> Result<(), Error> {
        let wrong: &[(&str, bool)] = match algorithm {
            Algorithm::TokenBucket => &[
                ("limit", self.limit.is_some()),
                ("window", self.window.is_some()),
            ],
            Algorithm::Concurrency => &[
                ("window", self.window.is_some()),
                ("capacity", self.capacity.is_some()),
                ("refill_rate", self.refill_rate.is_some()),
            ],
            _ => &[
                ("capacity", self.capacity.is_some()),
                ("refill_rate", self.refill_rate.is_some()),
            ],
        };
        if let Some((field, _)) = wrong.iter().find(|(_, set)| *set) {
            let takes = match algorithm {
                Algorithm::TokenBucket => "capacity and refill_rate",
                Algorithm::Concurrency => "limit (and max_hold)",
                _ => "limit and window",
            };
            return Err(Error::config(
                format!("{at}.{field}"),
                format!("{algorithm} takes {takes}, not {field}"),
            ));
        }
        Ok(())
    }

    /// The quota these parameters describe; `inherited` is the rule's own parameters when these
    /// are a role's (so that a missing one is reported at the rule, where it belongs).
    fn quota(
        &self,
        algorithm: Algorithm,
        at: &str,
        inherited: Option<&Params>,
        calendar: Option<Calendar>,
    ) -> Result<Quota, Error> {
        if inherited.is_none() {
            self.check_applicable(algorithm, at)?;
        }
        let field = |name: &str| format!("{at}.{name}");
        // A role's parameters fall back to the rule's, which were checked first: only the
        // rule's own can be missing.
        let missing = |name: &str| Error::config(field(name), format!("{algorithm} needs {name}"));
        let non_zero = |value: u64, name: &str| {
            NonZeroU64::new(value)
                .ok_or_else(|| Error::config(field(name), format!("{name} must be at least 1")))
        };
        match algorithm {
            Algorithm::TokenBucket => {
                let capacity = non_zero(
                    self.capacity.ok_or_else(|| missing("capacity"))?,
                    "capacity",
                )?;
                let rate = self.refill_rate.ok_or_else(|| missing("refill_rate"))?;
                Quota::token_bucket(capacity, rate).map_err(|e| {
                    let name = if e.message().contains("refill_rate") {
                        "refill_rate"
                    } else {
                        "capacity"
                    };
                    Error::config(field(name), e.message())
                })
            }
            Algorithm::Concurrency => {
                let limit = non_zero(self.limit.ok_or_else(|| missing("limit"))?, "limit")?;
                let hold = self.max_hold.map_or(DEFAULT_MAX_HOLD, |h| h.0);
                Quota::concurrency(limit, hold)
                    .map_err(|e| Error::config(field("max_hold"), e.message()))
            }
            _ => {
                let limit = non_zero(self.limit.ok_or_else(|| missing("limit"))?, "limit")?;
                let window = self.window.ok_or_else(|| missing("window"))?;
                if let Some(zone) = calendar {
                    let unit = match window {
                        WindowLength::Month => Some(CalendarUnit::Month),
                        WindowLength::Length(HumanDuration(d)) if d == DAY => {
                            Some(CalendarUnit::Day)
                        }
                        WindowLength::Length(HumanDuration(d)) if d == 7 * DAY => {
                            Some(CalendarUnit::Week)
                        }
                        WindowLength::Length(_) => None,
                    }
                    .ok_or_else(|| {
                        Error::config(
                            field("window"),
                            "a calendar window is \"1d\", \"1w\" or \"1mo\"",
                        )
                    })?;
                    return Ok(Quota::calendar_window(limit, zone.with_unit(unit)));
                }
                let WindowLength::Length(HumanDuration(window)) = window else {
                    return Err(Error::config(
                        field("window"),
                        "a month has no fixed length: set align = \"calendar\" for calendar months",
                    ));
                };
                if window.is_zero() {
                    return Err(Error::config(
                        field("window"),
                        "window must be greater than zero",
                    ));
                }
                let made = match algorithm {
                    Algorithm::FixedWindow => Quota::fixed_window(limit, window),
                    Algorithm::SlidingWindow => Quota::sliding_window(limit, window),
                    _ => Quota::sliding_window_counter(limit, window),
                };
                made.map_err(|e| Error::config(field("window"), e.message()))
            }
        }
    }
}
