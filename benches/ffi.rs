//! The C ABI's per-call overhead: `fw_check` (through the ABI: C strings in, UTF-8 checks, a
//! panic boundary, an out-struct) against `Engine::check` from Rust, on the same engine
//! configuration and request, in one group.
//!
//! Run: `cargo bench -p floodwall-benches --bench ffi`.

#![allow(unsafe_code)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use floodwall::{Engine, ManualClock, Request, Timestamp};
use floodwall_benches::ONE_LAYER;
use fw_ffi as ffi;

fn overhead(c: &mut Criterion) {
    let now_ms = 1_700_000_000_000u64;
    let engine = Engine::from_toml(ONE_LAYER)
        .expect("config")
        .with_clock(ManualClock::new(Timestamp::from_millis(now_ms)));
    let toml = std::ffi::CString::new(ONE_LAYER).expect("no NUL");
    let mut handle: *mut ffi::fw_engine = std::ptr::null_mut();
    // SAFETY: valid string and out-pointer.
    let code = unsafe { ffi::fw_engine_from_toml(toml.as_ptr(), &mut handle) };
    assert_eq!(code, ffi::fw_result::FW_OK);

    let mut group = c.benchmark_group("check_overhead");
    group.bench_function("rust/Engine::check", |b| {
        let request = Request::new("GET", "/api/orders")
            .subject("user-1")
            .role("free")
            .at(Timestamp::from_millis(now_ms));
        b.iter(|| {
            black_box(
                engine
                    .check(black_box(&request))
                    .expect("decision")
                    .allowed(),
            )
        })
    });
    group.bench_function("c_abi/fw_check", |b| {
        let request = ffi::fw_request {
            method: c"GET".as_ptr(),
            path: c"/api/orders".as_ptr(),
            subject: c"user-1".as_ptr(),
            role: c"free".as_ptr(),
            ip: std::ptr::null(),
            cost: 1,
            now_ms: now_ms as i64,
            headers: std::ptr::null(),
            headers_len: 0,
        };
        let mut out = ffi::fw_decision {
            allowed: false,
            rule_index: -1,
            limit: 0,
            remaining: 0,
            reset_after_ms: 0,
            retry_after_ms: 0,
            store: ffi::fw_store::FW_STORE_MEMORY,
            blocked: false,
            permit: 0,
        };
        b.iter(|| {
            // SAFETY: live engine, valid request and out-struct.
            let code = unsafe { ffi::fw_check(handle, black_box(&request), &mut out) };
            black_box((code, out.allowed))
        })
    });
    group.finish();
    // SAFETY: the handle is live and freed once.
    unsafe { ffi::fw_engine_free(handle) };
}

criterion_group!(benches, overhead);
criterion_main!(benches);
