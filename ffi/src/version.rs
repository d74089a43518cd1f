//! The library's version.

use std::ffi::{CStr, c_char};

/// Major version of the library (matches `Cargo.toml`).
pub const FW_VERSION_MAJOR: u32 = 0;
/// Minor version of the library.
pub const FW_VERSION_MINOR: u32 = 1;
/// Patch version of the library.
pub const FW_VERSION_PATCH: u32 = 0;

/// The library's version, e.g. `"0.1.0"` (static; never freed).
#[unsafe(no_mangle)]
pub extern "C" fn fw_version() -> *const c_char {
    static VERSION: &CStr = c"0.1.0";
    VERSION.as_ptr()
}
