//! Request paths split into segments ([`RequestPath`]) and the compiled path patterns that
//! match them ([`PathPattern`]).

use std::fmt;

use smallvec::SmallVec;

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
                _ => Segment::Literal(crate::path::normalize_segment(s, fold_case).into()),
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
                    Segment::Literal(literal) => crate::common::same_text(literal, first),
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
}
