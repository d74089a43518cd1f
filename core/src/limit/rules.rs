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

use std::fmt;

use smallvec::SmallVec;

use super::Quota;

/// A request path split into its non-empty segments, query and fragment dropped.
#[derive(Clone)]
pub struct RequestPath<'a> {
    segments: SmallVec<[&'a str; 12]>,
    /// The path before its query when it already is in normalised form (`/a/b`): then
    /// writing the normalised form is one copy.
    normalized: Option<&'a str>,
}

// Equality and `Debug` are those of the segments alone.
impl PartialEq for RequestPath<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.segments == other.segments
    }
}

impl Eq for RequestPath<'_> {}

impl fmt::Debug for RequestPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestPath")
            .field("segments", &self.segments)
            .finish()
    }
}

impl<'a> RequestPath<'a> {
    /// Splits `path` (which may carry `?query` and `#fragment`).
    #[inline]
    pub fn parse(path: &'a str) -> Self {
        let mut parsed = Self::empty();
        parsed.fill(path);
        parsed
    }

    /// The root path, with no segments.
    #[inline]
    pub(crate) fn empty() -> Self {
        RequestPath {
            segments: SmallVec::new(),
            normalized: None,
        }
    }

    /// Appends the segments of `path` (which may carry `?query` and `#fragment`).
    #[inline]
    pub(crate) fn fill(&mut self, path: &'a str) {
        if path.is_empty() {
            return;
        }
        let bytes = path.as_bytes();
        let end = bytes
            .iter()
            .position(|&b| b == b'?' || b == b'#')
            .unwrap_or(bytes.len());
        let was_empty = self.segments.is_empty();
        // Already normalised: a leading `/`, no empty segment after it, no trailing `/`.
        let mut clean = end > 0 && bytes[0] == b'/';
        // Splitting on the ASCII byte `/` always lands on character boundaries.
        let mut start = 0;
        for (i, &b) in bytes[..end].iter().enumerate() {
            if b == b'/' {
                if i > start {
                    self.segments.push(&path[start..i]);
                } else if i > 0 {
                    clean = false;
                }
                start = i + 1;
            }
        }
        if end > start {
            self.segments.push(&path[start..end]);
        } else {
            clean = false;
        }
        self.normalized = if clean && was_empty {
            Some(&path[..end])
        } else {
            None
        };
    }

    /// Appends the segments of `path`, which is in normal form
    /// ([`crate::http::normalize_path`]: no query, no empty segment), so that only the `/`s
    /// are looked for.
    #[inline]
    pub(crate) fn fill_normal(&mut self, path: &'a str) {
        debug_assert!(
            path.starts_with('/'),
            "normal paths start with '/': {path:?}"
        );
        let mut start = 1;
        for (i, &b) in path.as_bytes().iter().enumerate().skip(1) {
            if b == b'/' {
                self.segments.push(&path[start..i]);
                start = i + 1;
            }
        }
        if path.len() > 1 {
            self.segments.push(&path[start..]);
        }
        self.normalized = Some(path);
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[&'a str] {
        &self.segments
    }

    /// [`write_normalized`](Self::write_normalized) into a byte buffer, a slice at a time.
    #[inline]
    pub(crate) fn write_normalized_bytes<A: smallvec::Array<Item = u8>>(
        &self,
        out: &mut SmallVec<A>,
    ) {
        if let Some(normalized) = self.normalized {
            out.extend_from_slice(normalized.as_bytes());
            return;
        }
        if self.segments.is_empty() {
            out.push(b'/');
        }
        for segment in &self.segments {
            out.push(b'/');
            out.extend_from_slice(segment.as_bytes());
        }
    }

    /// Appends the normalised form (`/a/b`, or `/` for the root) to `out`.
    pub fn write_normalized(&self, out: &mut impl Extend<u8>) {
        if self.segments.is_empty() {
            out.extend(*b"/");
        }
        for segment in &self.segments {
            out.extend(*b"/");
            out.extend(segment.bytes());
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    One,
    Any,
}

/// A compiled path pattern such as `/api/orders/*` or `/v1/**`.
#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: Box<str>,
    segments: Box<[Segment]>,
}

impl PathPattern {
    /// Compiles `pattern`, its literal segments kept in their case; the error says what is
    /// wrong with it.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        Self::parse_folded(pattern, false)
    }

    /// Compiles `pattern` for paths in normal form, lower-casing its literal segments when
    /// `fold_case` (paths are then lower-cased too).
    pub fn parse_folded(pattern: &str, fold_case: bool) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err(format!("path pattern {pattern:?} must start with '/'"));
        }
        if pattern.contains(['?', '#']) {
            return Err(format!(
                "path pattern {pattern:?} must not contain '?' or '#': queries are not matched"
            ));
        }
        let mut segments = Vec::new();
        for s in pattern.split('/').filter(|s| !s.is_empty()) {
            let segment = match s {
                "**" => Segment::Any,
                "*" => Segment::One,
                _ if s.starts_with(':') && s.len() > 1 => Segment::One,
                _ if s.starts_with('{') && s.ends_with('}') && s.len() > 2 => Segment::One,
                _ if s.contains('*') => {
                    return Err(format!(
                        "path pattern {pattern:?}: '*' and '**' must stand alone as a whole segment, found {s:?}"
                    ));
                }
                _ => Segment::Literal(crate::http::normalize_segment(s, fold_case).into()),
            };
            segments.push(segment);
        }
        Ok(PathPattern {
            source: pattern.into(),
            segments: segments.into(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `path` matches.
    pub fn matches(&self, path: &RequestPath<'_>) -> bool {
        match_segments(&self.segments, path.segments())
    }
}

fn match_segments(pattern: &[Segment], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        // A trailing `**` matches whatever is left.
        Some((Segment::Any, [])) => true,
        Some((Segment::Any, rest)) => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((segment, rest)) => match path.split_first() {
            None => false,
            Some((first, tail)) => {
                let ok = match segment {
                    Segment::Literal(literal) => **literal == **first,
                    _ => true,
                };
                ok && match_segments(rest, tail)
            }
        },
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({:?})", self.source)
    }
}

/// What a rule counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// The authenticated subject (`sub`).
    Subject,
    /// The client address, as the host determined it.
    Ip,
    /// The method and normalised path: `GET /api/orders/7`.
    Endpoint,
    /// One counter for every request the rule matches.
    Global,
    /// The value of a request header; the name is stored lower-cased.
    Header(Box<str>),
}

impl KeyKind {
    /// Parses `subject`, `ip`, `endpoint`, `global` or `header:NAME`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        match spec {
            "subject" => Ok(KeyKind::Subject),
            "ip" => Ok(KeyKind::Ip),
            "endpoint" => Ok(KeyKind::Endpoint),
            "global" => Ok(KeyKind::Global),
            _ => match spec.strip_prefix("header:") {
                Some(name) if is_token(name) => {
                    Ok(KeyKind::Header(name.to_ascii_lowercase().into()))
                }
                Some(name) => Err(format!("{name:?} is not a valid header name")),
                None => Err(format!(
                    "unknown key {spec:?}: expected subject, ip, endpoint, global or \"header:NAME\""
                )),
            },
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Subject => f.write_str("subject"),
            KeyKind::Ip => f.write_str("ip"),
            KeyKind::Endpoint => f.write_str("endpoint"),
            KeyKind::Global => f.write_str("global"),
            KeyKind::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// An RFC 9110 token: what a method or header name may be.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Which requests a rule applies to. Empty lists mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleMatcher {
    methods: Box<[Box<str>]>,
    paths: Box<[PathPattern]>,
    roles: Box<[Box<str>]>,
    /// Whether `HEAD` matches where `GET` is listed.
    head_as_get: bool,
}

impl RuleMatcher {
    /// A matcher from upper-cased methods, compiled patterns and role names; `GET` matches
    /// `HEAD` too.
    pub fn new(methods: Vec<Box<str>>, paths: Vec<PathPattern>, roles: Vec<Box<str>>) -> Self {
        RuleMatcher {
            methods: methods.into(),
            paths: paths.into(),
            roles: roles.into(),
            head_as_get: true,
        }
    }

    /// The same matcher, `GET` matching `HEAD` only when `head_as_get`.
    pub fn head_as_get(mut self, head_as_get: bool) -> Self {
        self.head_as_get = head_as_get;
        self
    }

    /// The role names the rule is restricted to (empty: any role, or none).
    pub fn roles(&self) -> &[Box<str>] {
        &self.roles
    }

    /// Whether the matcher looks at the path at all.
    pub fn has_paths(&self) -> bool {
        !self.paths.is_empty()
    }

    /// Whether a request with this method (any case), path (in normal form) and role is
    /// matched.
    pub fn matches(&self, method: &str, path: &RequestPath<'_>, role: Option<&str>) -> bool {
        (self.methods.is_empty() || self.matches_method(method))
            && (self.roles.is_empty() || role.is_some_and(|r| self.roles.iter().any(|x| **x == *r)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
    }

    fn matches_method(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
            || (self.head_as_get
                && method.eq_ignore_ascii_case("HEAD")
                && self.methods.iter().any(|m| &**m == "GET"))
    }
}

/// Which responses a rule keeps counted: the others are refunded once the response is known
/// (express-rate-limit's `skipSuccessfulRequests` and `skipFailedRequests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountResponses {
    /// Every request counts (the default).
    #[default]
    All,
    /// Only requests answered with a failed status count.
    Failed,
    /// Only requests answered with a status that is not a failure count.
    Successful,
}

/// A set of HTTP statuses (100 to 999).
#[derive(Clone, PartialEq, Eq)]
pub struct StatusSet([u64; 16]);

impl StatusSet {
    /// No status.
    pub const fn empty() -> Self {
        StatusSet([0; 16])
    }

    /// `from..=to` added.
    pub fn with_range(mut self, from: u16, to: u16) -> Self {
        for status in from..=to.min(1023) {
            self.0[usize::from(status / 64)] |= 1 << (status % 64);
        }
        self
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        status < 1024 && self.0[usize::from(status / 64)] & (1 << (status % 64)) != 0
    }
}

impl Default for StatusSet {
    /// 400 to 599: every client and server error.
    fn default() -> Self {
        StatusSet::empty().with_range(400, 599)
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut status = 0u16;
        while status < 1024 {
            if self.contains(status) {
                let start = status;
                while status + 1 < 1024 && self.contains(status + 1) {
                    status += 1;
                }
                list.entry(&format_args!("{start}-{status}"));
            }
            status += 1;
        }
        list.finish()
    }
}

/// What a rule does once the response is known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseCounting {
    /// Which responses stay counted.
    pub count: CountResponses,
    /// The statuses that are failures.
    pub failed: StatusSet,
    /// A response header (lower-case name) whose integer value is added to the cost after the
    /// fact.
    pub cost_header: Option<Box<str>>,
}

impl ResponseCounting {
    /// Whether the rule needs to hear about the response at all.
    pub fn needs_response(&self) -> bool {
        self.count != CountResponses::All || self.cost_header.is_some()
    }

    /// Whether a request answered `status` is given back.
    pub fn refunds(&self, status: u16) -> bool {
        match self.count {
            CountResponses::All => false,
            CountResponses::Failed => !self.failed.contains(status),
            CountResponses::Successful => self.failed.contains(status),
        }
    }
}

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
    before_auth: bool,
    shadow: bool,
    response: ResponseCounting,
}

impl Rule {
    /// A rule; `policies[0]` is the default (its role is ignored), the rest override by role.
    pub fn new(name: Box<str>, matcher: RuleMatcher, key: KeyKind, policies: Vec<Policy>) -> Self {
        assert!(!policies.is_empty(), "a rule needs its default policy");
        Rule {
            name,
            matcher,
            key,
            policies: policies.into(),
            before_auth: false,
            shadow: false,
            response: ResponseCounting::default(),
        }
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
        self
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
    pub fn policy_for(&self, role: Option<&str>) -> (usize, &Policy) {
        if let Some(role) = role
            && let Some(i) = self.policies[1..]
                .iter()
                .position(|p| p.role.as_deref() == Some(role))
        {
            return (i + 1, &self.policies[i + 1]);
        }
        (0, &self.policies[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern)
            .unwrap()
            .matches(&RequestPath::parse(path))
    }

    #[test]
    fn patterns() {
        assert!(m("/api/orders/*", "/api/orders/7"));
        assert!(!m("/api/orders/*", "/api/orders"));
        assert!(!m("/api/orders/*", "/api/orders/7/items"));
        assert!(m("/api/orders/:id/items", "/api/orders/7/items?x=1"));
        assert!(m("/api/orders/{id}", "//api/orders/7/"));
        assert!(m("/v1/**", "/v1"));
        assert!(m("/v1/**", "/v1/a/b/c"));
        assert!(m("/**/health", "/a/b/health"));
        assert!(!m("/**/health", "/a/b/healthz"));
        assert!(m("/", "/?q=1"));
        assert!(!m("/Api", "/api"));
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(
            PathPattern::parse("api")
                .unwrap_err()
                .contains("start with '/'")
        );
        assert!(
            PathPattern::parse("/a*")
                .unwrap_err()
                .contains("whole segment")
        );
        assert!(PathPattern::parse("/a?b").unwrap_err().contains("queries"));
    }

    #[test]
    fn normalized_path() {
        let mut out = Vec::new();
        RequestPath::parse("/api//orders/7/?x").write_normalized(&mut out);
        assert_eq!(out, b"/api/orders/7");
        let mut out = Vec::new();
        RequestPath::parse("").write_normalized(&mut out);
        assert_eq!(out, b"/");
        for (path, normal) in [
            ("/api/orders/7", "/api/orders/7"),
            ("/api/orders/7?x#y", "/api/orders/7"),
            ("/api/orders/7/", "/api/orders/7"),
            ("//api/orders", "/api/orders"),
            ("/api//orders", "/api/orders"),
            ("api/orders", "/api/orders"),
            ("/", "/"),
            ("//", "/"),
            ("/?q", "/"),
            ("?q", "/"),
            ("/a", "/a"),
        ] {
            let mut out: SmallVec<[u8; 8]> = SmallVec::new();
            let parsed = RequestPath::parse(path);
            parsed.write_normalized_bytes(&mut out);
            assert_eq!(out.as_slice(), normal.as_bytes(), "{path:?}");
            let mut slow = Vec::new();
            parsed.write_normalized(&mut slow);
            assert_eq!(slow, normal.as_bytes(), "{path:?}");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(
            KeyKind::parse("header:X-Api-Key"),
            Ok(KeyKind::Header("x-api-key".into()))
        );
        assert!(KeyKind::parse("header:bad name").is_err());
        assert!(KeyKind::parse("user").unwrap_err().contains("unknown key"));
    }
}
