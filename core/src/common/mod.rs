//! Value types and helpers the configuration's sections share — durations as people write
//! them, the `[headers]` section, and how a reading error names its field. A leaf: it uses
//! nothing of the crate but [`Error`](crate::Error), so that `config` (which gathers every
//! section) and the modules that own a section (`auth`, `balance`, `http`, `decision`) need
//! not import each other.

mod duration;
mod headers;
mod read;

pub use duration::HumanDuration;
pub use headers::HeadersConfig;
pub(crate) use read::{json_error, not_an_object, path_of, toml_error};
