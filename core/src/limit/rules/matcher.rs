//! Which requests a rule applies to ([`RuleMatcher`]) and what it counts them by
//! ([`KeyKind`]).

use std::fmt;

use super::{PathPattern, RequestPath};

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
    /// Whether it matches every request (no methods, paths or roles).
    any: bool,
}

impl RuleMatcher {
    /// A matcher from upper-cased methods, compiled patterns and role names; `GET` matches
    /// `HEAD` too.
    pub fn new(methods: Vec<Box<str>>, paths: Vec<PathPattern>, roles: Vec<Box<str>>) -> Self {
        let any = methods.is_empty() && paths.is_empty() && roles.is_empty();
        RuleMatcher {
            methods: methods.into(),
            paths: paths.into(),
            roles: roles.into(),
            head_as_get: true,
            any,
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
    #[inline]
    pub fn matches(&self, method: &str, path: &RequestPath<'_>, role: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        self.matches_some(method, path, role)
    }

    fn matches_some(&self, method: &str, path: &RequestPath<'_>, role: Option<&str>) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
