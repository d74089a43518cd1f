//! `include/floodwall.h` is what cbindgen (pinned) makes of `ffi/src/`, with the crate's
//! documentation (the conventions and every handle's thread safety) as its preamble:
//! regenerated here and compared, so a change to the ABI that forgets the header fails
//! `make test`. `FLOODWALL_BLESS=1 cargo test -p floodwall-ffi --test header` rewrites it.

#![allow(unsafe_code)]

use std::path::PathBuf;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The header as cbindgen makes it now.
fn generate() -> String {
    let crate_dir = crate_dir();
    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).expect("src/lib.rs");
    config.header = Some(preamble(&lib));
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    String::from_utf8(generated).expect("the header is UTF-8")
}

/// The crate's `//!` documentation as C comments.
fn preamble(lib: &str) -> String {
    lib.lines()
        .map_while(|line| line.strip_prefix("//!"))
        .map(|line| format!("//{line}").trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_committed_header_is_current() {
    let generated = generate();
    let path = crate_dir().join("../include/floodwall.h");
    if std::env::var_os("FLOODWALL_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/floodwall.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/floodwall.h is stale: run `FLOODWALL_BLESS=1 cargo test -p floodwall-ffi --test header` and commit it"
    );
}

#[test]
fn the_preamble_documents_every_handle() {
    let header = generate();
    let preamble = &header[..header
        .find("#ifndef FLOODWALL_H")
        .expect("the include guard")];
    assert!(
        preamble.starts_with("// The C ABI of floodwall"),
        "{preamble}"
    );
    let thread_safety = &preamble[preamble.find("Thread safety:").expect("a paragraph")..];
    for handle in [
        "fw_engine",
        "fw_identity",
        "fw_headers",
        "fw_lease",
        "fw_http_exchange",
    ] {
        assert!(thread_safety.contains(handle), "{handle}: {thread_safety}");
        let opaque = format!("typedef struct {handle} {handle};");
        assert!(header.contains(&opaque), "{opaque}");
    }
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
