//! Which requests a rule applies to, and what it counts them by.
//!
//! Compiled once at load: methods are upper-cased, path patterns split into segments, header
//! names lower-cased. Matching a request allocates nothing.
//!
//! Paths: the query string and fragment are dropped, the path is split on `/` and empty
//! segments are ignored, so `/api//orders/` is `/api/orders`. In a pattern, a literal segment
//! matches itself exactly (case-sensitive); `*`, `:name` and `{name}` match exactly one
//! segment; `**` matches any number of segments, including none. Percent-encoding is not
//! decoded: a host that accepts encoded paths passes the decoded path.

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
    /// Compiles `pattern`; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<Self, String> {
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
                _ => Segment::Literal(s.into()),
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
}

impl RuleMatcher {
    /// A matcher from upper-cased methods, compiled patterns and role names.
    pub fn new(methods: Vec<Box<str>>, paths: Vec<PathPattern>, roles: Vec<Box<str>>) -> Self {
        RuleMatcher {
            methods: methods.into(),
            paths: paths.into(),
            roles: roles.into(),
        }
    }

    /// Whether the matcher looks at the path at all.
    pub fn has_paths(&self) -> bool {
        !self.paths.is_empty()
    }

    /// Whether a request with this method (any case), path and role is matched.
    pub fn matches(&self, method: &str, path: &RequestPath<'_>, role: Option<&str>) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && (self.roles.is_empty() || role.is_some_and(|r| self.roles.iter().any(|x| **x == *r)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
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
        }
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
