//! The Python binding of floodwall.
//!
//! Filled by the Python package issue; for now it only links the core so that the workspace
//! builds and tests it as one.

/// The version of the floodwall core this binding wraps.
pub const CORE_VERSION: &str = floodwall::VERSION;
