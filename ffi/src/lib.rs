//! The C ABI of floodwall.
//!
//! This crate will expose the engine to C, C++ and Go through opaque handles and a generated
//! header (`include/floodwall.h`); its API is defined by the C ABI issue. Until then it only
//! re-exports the engine's version so that the workspace builds it and its link to the core is
//! checked.

/// The version of the floodwall core this crate wraps.
pub const CORE_VERSION: &str = floodwall::VERSION;
