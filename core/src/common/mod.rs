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

pub use duration::HumanDuration;
pub use headers::HeadersConfig;
pub(crate) use read::{json_error, not_an_object, path_of, toml_error};
