# floodwall — the two commands a new user runs (see README.md):
#   make demo   runs the demo on the memory store
#   make test   format check, clippy with -D warnings, and every test
# Both install what they need (the Rust components rustfmt and clippy) instead of assuming it.

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: demo test setup fmt-check clippy unit bench-smoke bench fmt

demo: setup
	$(CARGO) run --quiet --release -p floodwall --example demo

test: setup fmt-check clippy bench-smoke unit

# rustfmt and clippy come with rustup's default profile; add them where a minimal one lacks them.
setup:
	@command -v $(CARGO) >/dev/null || { echo "cargo is required: install Rust from rustup"; exit 1; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Every test of the workspace; the last line sums up all the test binaries' results.
unit:
	@mkdir -p target; set -o pipefail; $(CARGO) test --workspace --locked 2>&1 | tee target/unit-tests.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/unit-tests.log

# Runs every criterion bench once as a test (nothing is timed), so the benches keep compiling
# and their assertions hold.
bench-smoke:
	$(CARGO) test --locked -p floodwall-benches --benches

# The measurements recorded in README.md's performance section.
bench:
	$(CARGO) bench -p floodwall-benches --bench check -- --noplot

fmt:
	$(CARGO) fmt --all
