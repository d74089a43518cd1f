//! Request targets to one normal path (RFC 3986 §6.2.2), the form rules match, endpoint keys
//! are built from and monitoring records.
//!
//! In order: an absolute-form target (`http://host/a`) loses its scheme and authority; the
//! query and fragment go; each segment loses its `;` parameters; percent-escapes of unreserved
//! characters are decoded (`%7E` is `~`, `%2E` is `.`), other escapes get upper-case hex digits,
//! and bytes a path may not hold raw (spaces, non-ASCII) are escaped; `.` and `..` segments are
//! resolved; empty segments (repeated and trailing slashes) go. With case folding (the default:
//! hosts such as Express route case-insensitively) ASCII letters outside escapes are lower-cased.
//! Every spelling of one path is then one string: `/API/orders/`, `//api/./orders;x=1` and
//! `HTTP://host/api/%6Frders` are all `/api/orders`.
//!
//! Normalising can only make a rule match more requests; exempting a request (public and
//! skipped paths) must not follow it that far, because hosts route the target as it came: a
//! host that routes `/api/../public/x` by its text would serve an `/api` handler for what the
//! normal form calls `/public/x`. [`NormalPath::exemptable`] says whether the normal form
//! differs from the target only in ways hosts route alike — case, a trailing slash, the hex
//! digits of an escape, the query — and only such paths can be exempted.

use smallvec::SmallVec;

/// A buffer for a normal path that had to be rewritten (most paths are already normal and
/// borrowed as they are).
pub type PathBuffer = SmallVec<[u8; 128]>;

/// A request target in normal form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormalPath<'a> {
    path: &'a str,
    exemptable: bool,
}

impl<'a> NormalPath<'a> {
    /// The normal path: `/` and segments, never a trailing slash but for the root.
    pub fn as_str(&self) -> &'a str {
        self.path
    }

    /// Whether the target routes as its normal form does, so that a public or skipped path
    /// may exempt it (see the module docs).
    pub fn exemptable(&self) -> bool {
        self.exemptable
    }
}

/// An RFC 3986 unreserved character: what percent-decoding may reveal without changing meaning.
#[inline]
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The bytes a path segment holds raw: `pchar` but `%`, and `;`, which starts parameters here.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            );
        b += 1;
    }
    table
};

/// What [`normal_prefix`] makes of a byte: part of an ordinary segment, a `/`, a `.`, the
/// start of the query or fragment, or a byte a normal path does not hold raw.
const ORDINARY: u8 = 0;
const DOT: u8 = 1;
const SLASH: u8 = 2;
const END: u8 = 3;
const OTHER: u8 = 4;

/// Each byte's class for [`normal_prefix`]; with `fold_case`, upper-case letters are
/// [`OTHER`] (the normal form has none).
const fn classes(fold_case: bool) -> [u8; 256] {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = match c {
            b'/' => SLASH,
            b'.' => DOT,
            b'?' | b'#' => END,
            b'A'..=b'Z' if fold_case => OTHER,
            _ if PLAIN[b] => ORDINARY,
            _ => OTHER,
        };
        b += 1;
    }
    table
}

const CLASSES: [u8; 256] = classes(false);
const CLASSES_FOLDED: [u8; 256] = classes(true);

#[inline]
fn plain(b: u8) -> bool {
    PLAIN[b as usize]
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Where the path of `target` starts and ends: past an absolute form's scheme and authority,
/// before the query or fragment.
fn path_span(target: &str) -> (usize, usize) {
    let bytes = target.as_bytes();
    let mut start = 0;
    if bytes.first() != Some(&b'/') {
        // `scheme://authority/path`: a scheme is a letter then letters, digits, `+`, `-`, `.`.
        if let Some(colon) = bytes.iter().position(|&b| b == b':')
            && colon > 0
            && bytes[0].is_ascii_alphabetic()
            && bytes[..colon]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            && bytes[colon + 1..].starts_with(b"//")
        {
            let authority = colon + 3;
            start = bytes[authority..]
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .map_or(bytes.len(), |i| authority + i);
        }
    }
    let end = bytes[start..]
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .map_or(bytes.len(), |i| start + i);
    (start, end)
}

/// The length of `target`'s path when the target starts with a path that is already normal —
/// a leading `/`, segments of plain bytes (no upper-case letters when folding), no empty, `.`
/// or `..` segment, no trailing slash — up to its query or fragment; in one pass over the
/// bytes, one table look-up each, for the usual request.
#[inline]
fn normal_prefix(target: &[u8], fold_case: bool) -> Option<usize> {
    if target.first() != Some(&b'/') {
        return None;
    }
    let classes = if fold_case { &CLASSES_FOLDED } else { &CLASSES };
    // The root alone is normal; any other path ends in an ordinary segment.
    let normal = |end: usize| end == 1 || ends_in_ordinary_segment(&target[..end]);
    for (i, &b) in target.iter().enumerate().skip(1) {
        match classes[b as usize] {
            ORDINARY | DOT => {}
            SLASH if ends_in_ordinary_segment(&target[..i]) => {}
            END if normal(i) => return Some(i),
            _ => return None,
        }
    }
    normal(target.len()).then_some(target.len())
}

/// Whether the last segment of `path` (which starts with `/`) is neither empty nor `.` or
/// `..`: looked at only where a segment ends.
#[inline]
fn ends_in_ordinary_segment(path: &[u8]) -> bool {
    !matches!(path, [.., b'/'] | [.., b'/', b'.'] | [.., b'/', b'.', b'.'])
}

/// The normal form of `target` (a request target as received: origin or absolute form, query
/// and all), borrowed from it when it already is normal, else written into `buffer`.
///
/// ```
/// use floodwall::http::{PathBuffer, normalize_path};
///
/// let mut buffer = PathBuffer::new();
/// let path = normalize_path("HTTP://host/API//orders/./7/?page=2", true, &mut buffer);
/// assert_eq!(path.as_str(), "/api/orders/7");
/// assert!(!path.exemptable()); // `//` and `.`: a host may route it elsewhere
/// let mut buffer = PathBuffer::new();
/// assert!(normalize_path("/Health/", true, &mut buffer).exemptable());
/// ```
pub fn normalize_path<'a>(
    target: &'a str,
    fold_case: bool,
    buffer: &'a mut PathBuffer,
) -> NormalPath<'a> {
    if let Some(end) = normal_prefix(target.as_bytes(), fold_case) {
        return NormalPath {
            path: &target[..end],
            exemptable: true,
        };
    }
    let (start, end) = path_span(target);
    let raw = &target[start..end];
    if raw == "*" {
        // The asterisk form (`OPTIONS *`) asks about the server as a whole.
        return NormalPath {
            path: "/",
            exemptable: false,
        };
    }
    rewrite(raw.as_bytes(), fold_case, buffer)
}

/// The slow path of [`normalize_path`]: segment by segment into `out`.
#[cold]
fn rewrite<'a>(raw: &[u8], fold_case: bool, out: &'a mut PathBuffer) -> NormalPath<'a> {
    out.clear();
    let mut exemptable = raw.first() == Some(&b'/');
    // Where each kept segment's `/` is, so that `..` can drop the last one.
    let mut starts: SmallVec<[usize; 16]> = SmallVec::new();
    let mut segments = raw.split(|&b| b == b'/').peekable();
    if exemptable {
        segments.next(); // the empty text before the leading `/`
    }
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let segment = match segment.iter().position(|&b| b == b';') {
            Some(cut) => {
                exemptable = false;
                &segment[..cut]
            }
            None => segment,
        };
        let begin = out.len();
        out.push(b'/');
        let mut i = 0;
        while i < segment.len() {
            let b = segment[i];
            if b == b'%' {
                let escaped = segment
                    .get(i + 1..i + 3)
                    .and_then(|h| Some(hex_value(h[0])? << 4 | hex_value(h[1])?));
                match escaped {
                    Some(v) if unreserved(v) => {
                        exemptable = false;
                        out.push(if fold_case { v.to_ascii_lowercase() } else { v });
                    }
                    Some(v) => out.extend_from_slice(&[
                        b'%',
                        HEX[(v >> 4) as usize],
                        HEX[(v & 15) as usize],
                    ]),
                    None => {
                        // A `%` that starts no escape stands for itself.
                        exemptable = false;
                        out.extend_from_slice(b"%25");
                        i += 1;
                        continue;
                    }
                }
                i += 3;
                continue;
            }
            if plain(b) {
                out.push(if fold_case { b.to_ascii_lowercase() } else { b });
            } else {
                exemptable = false;
                out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            i += 1;
        }
        match &out[begin + 1..] {
            b"" => {
                // A trailing slash routes as the path without it; any other empty segment
                // does not.
                if !last {
                    exemptable = false;
                }
                out.truncate(begin);
            }
            b"." => {
                exemptable = false;
                out.truncate(begin);
            }
            b".." => {
                exemptable = false;
                out.truncate(starts.pop().unwrap_or(begin));
            }
            _ => starts.push(begin),
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    NormalPath {
        // Every byte written is ASCII: non-ASCII bytes were escaped.
        path: std::str::from_utf8(out).unwrap_or("/"),
        exemptable,
    }
}

/// One literal segment of a path pattern in the form [`normalize_path`] gives request
/// segments, so that the pattern `/Caf%c3%a9` matches the request `/caf%C3%A9`.
pub(crate) fn normalize_segment(segment: &str, fold_case: bool) -> String {
    let mut buffer = PathBuffer::new();
    let mut text = String::with_capacity(segment.len() + 1);
    text.push('/');
    text.push_str(segment);
    let normal = normalize_path(&text, fold_case, &mut buffer);
    normal.as_str().trim_start_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(target: &str) -> (String, bool) {
        let mut buffer = PathBuffer::new();
        let n = normalize_path(target, true, &mut buffer);
        (n.as_str().to_owned(), n.exemptable())
    }

    #[test]
    fn every_spelling_is_one_path() {
        for target in [
            "/api/orders",
            "/API/orders",
            "/api/ORDERS/",
            "HTTP://host/API/orders",
            "http://host:8080/api/orders?x=1",
            "//api//orders",
            "/api/./orders",
            "/x/../api/orders",
            "/api/orders;jsessionid=1",
            "/api/%6Frders",
            "/%61pi/orders#top",
            "/api/orders/.",
            "/api/x/y/../../orders",
        ] {
            assert_eq!(normal(target).0, "/api/orders", "{target}");
        }
    }

    #[test]
    fn escapes_and_raw_bytes() {
        assert_eq!(normal("/caf%c3%a9").0, "/caf%C3%A9");
        assert_eq!(normal("/café").0, "/caf%C3%A9");
        assert_eq!(
            normal("/a%2Fb").0,
            "/a%2Fb",
            "an escaped slash is no separator"
        );
        assert_eq!(normal("/a%2fb").0, "/a%2Fb");
        assert_eq!(normal("/100%").0, "/100%25");
        assert_eq!(normal("/a%zzb").0, "/a%25zzb");
        assert_eq!(normal("/a b").0, "/a%20b");
        assert_eq!(normal("/%2E%2E/etc").0, "/etc");
        assert_eq!(normal("/%7Euser").0, "/~user");
    }

    #[test]
    fn roots_and_odd_targets() {
        for target in [
            "",
            "/",
            "//",
            "/?q",
            "?q",
            "*",
            "/.",
            "/..",
            "/../..",
            "http://host",
        ] {
            assert_eq!(normal(target).0, "/", "{target:?}");
        }
        assert_eq!(normal("api/orders").0, "/api/orders");
        assert_eq!(normal("example.com:443").0, "/example.com:443");
    }

    #[test]
    fn case_is_kept_for_strict_hosts() {
        let mut buffer = PathBuffer::new();
        assert_eq!(
            normalize_path("/API/Orders/", false, &mut buffer).as_str(),
            "/API/Orders"
        );
        let mut buffer = PathBuffer::new();
        assert_eq!(normalize_path("/API", false, &mut buffer).as_str(), "/API");
    }

    #[test]
    fn only_routing_alike_spellings_are_exemptable() {
        for target in [
            "/health",
            "/Health",
            "/health/",
            "http://h/health?x",
            "/caf%c3%a9",
        ] {
            assert!(normal(target).1, "{target}");
        }
        for target in [
            "//health",
            "/x/../health",
            "/./health",
            "/health;x",
            "/h%65alth",
            "/he alth",
            "health",
            "/a//b",
            "/100%",
        ] {
            assert!(!normal(target).1, "{target}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        let mut buffer = PathBuffer::new();
        let target = "/api/orders/7?x=1";
        let n = normalize_path(target, true, &mut buffer);
        assert_eq!(n.as_str().as_ptr(), target.as_ptr());
        assert!(buffer.is_empty());
    }

    #[test]
    fn pattern_segments() {
        assert_eq!(normalize_segment("Caf%c3%a9", true), "caf%C3%A9");
        assert_eq!(normalize_segment("%7Ex", false), "~x");
    }

    proptest::proptest! {
        /// The one-pass check and the segment-by-segment rewrite agree: what the first takes
        /// as normal, the second leaves as it is, and every result is its own normal form.
        #[test]
        fn the_fast_path_agrees_with_the_rewrite(
            target in "/?[a-zA-Z0-9./%;?#~_-]{0,24}",
            fold_case: bool,
        ) {
            let (start, end) = path_span(&target);
            let mut rewritten = PathBuffer::new();
            let slow = rewrite(&target.as_bytes()[start..end], fold_case, &mut rewritten).as_str();
            if let Some(len) = normal_prefix(target.as_bytes(), fold_case) {
                proptest::prop_assert_eq!(&target[..len], slow);
            }
            let mut again = PathBuffer::new();
            let once = normalize_path(&target, fold_case, &mut again).as_str().to_owned();
            let mut buffer = PathBuffer::new();
            proptest::prop_assert_eq!(normalize_path(&once, fold_case, &mut buffer).as_str(), once.as_str());
        }
    }
}
