//! Value types and helpers the configuration's sections share — durations as people write
//! them, the `[headers]` section, the bounds on rules and role overrides, and how a reading
//! error names its field. A leaf: it uses
//! nothing of the crate but [`Error`](crate::Error), so that `config` (which gathers every
//! section) and the modules that own a section (`auth`, `balance`, `http`, `decision`) need
//! not import each other.

/// The most rules one configuration may have (and so the most layers one decision applies
/// atomically).
pub const MAX_RULES: usize = 256;

/// The most role overrides (`roles.<name>`) one rule may have.
pub const MAX_ROLE_OVERRIDES: usize = 65_536;

mod duration;
mod headers;
mod read;
pub(crate) mod retained;

pub use duration::HumanDuration;
pub use headers::HeadersConfig;
pub(crate) use read::{json_error, not_an_object, path_of, toml_error};

/// Whether two short texts (role names, path segments, methods) are equal: lengths first,
/// then up to 16 bytes in two overlapping words, without a call to `memcmp`.
#[inline]
pub(crate) fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    if a.len() > 16 {
        return a == b;
    }
    // Two overlapping words cover 8 to 16 bytes; shorter names go byte by byte.
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    if a.len() >= 8 {
        let last = a.len() - 8;
        return word(a, 0) == word(b, 0) && word(a, last) == word(b, last);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}
