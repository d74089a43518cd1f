//! `include/floodwall.h` is what cbindgen (pinned) makes of `ffi/src/lib.rs`: regenerated here
//! and compared, so a change to the ABI that forgets the header fails `make test`.
//! `FLOODWALL_BLESS=1 cargo test -p floodwall-ffi --test header` rewrites the header.

#![allow(unsafe_code)]

use std::path::PathBuf;

#[test]
fn the_committed_header_is_current() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = crate_dir.join("../include/floodwall.h");
    if std::env::var_os("FLOODWALL_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/floodwall.h");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/floodwall.h is stale: run `FLOODWALL_BLESS=1 cargo test -p floodwall-ffi --test header` and commit it"
    );
}

#[test]
fn the_version_macros_match_cargo_toml() {
    let v = env!("CARGO_PKG_VERSION");
    let expected = format!(
        "{}.{}.{}",
        floodwall::FW_VERSION_MAJOR,
        floodwall::FW_VERSION_MINOR,
        floodwall::FW_VERSION_PATCH
    );
    assert_eq!(v, expected);
    // SAFETY: fw_version returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(floodwall::fw_version()) };
    assert_eq!(version.to_str().expect("utf-8"), v);
}
