# floodwall — the two commands a new user runs (see README.md):
#   make demo   runs the reference Express gateway (examples/express-gateway) on the memory store
#   make test   format check, clippy with -D warnings, and every test
# Both install what they need (the Rust components rustfmt and clippy; redis-server, valgrind and
# a C compiler for the Redis and C ABI tests) instead of assuming it.

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: c-test go-test python-test bench-python node-test bench-node bench-node-faults demo flood load gateway-test test setup fmt-check clippy unit bench-smoke bench bench-jwt bench-redis peers fmt

# The reference Express gateway (examples/express-gateway, see its README): the Node
# package's addon built for speed, the example's pinned npm packages, then four sample
# upstreams and the gateway until Ctrl-C (ports, REDIS_URL, JWT_SECRET from the environment).
GATEWAY = examples/express-gateway
define gateway-release-build
	@command -v $(CARGO) >/dev/null || { echo "cargo is required: install Rust from rustup"; exit 1; }
	@command -v node >/dev/null || { echo "node 20 or later is required for the gateway"; exit 1; }
	cd bindings-node && npm ci --no-audit --no-fund --loglevel=error
	cd bindings-node && npx napi build --platform --release --js native.js --dts native.d.ts
	cd $(GATEWAY) && npm ci --no-audit --no-fund --loglevel=error
endef

demo:
	$(gateway-release-build)
	cd $(GATEWAY) && exec node demo.js

# The gateway under load for 10 s (free, premium and abusive callers at once, 127.0.0.1 only),
# beside Express alone and a bare upstream: the table in examples/express-gateway/README.md.
# Uses a running `make demo` when there is one, else starts its own.
load:
	$(gateway-release-build)
	cd $(GATEWAY) && node load.js

# Floods a running gateway (`make demo`) as the free caller, then as the premium caller, each
# until it is limited, and prints what came of it; URL=http://HOST:PORT names the gateway
# (default: GATEWAY_HOST and GATEWAY_PORT, as `make demo` reads them).
flood:
	cd $(GATEWAY) && node flood.js $(if $(URL),--url $(URL))

# The gateway's tests: end to end over HTTP on the memory store and on a redis-server of its
# own, the launcher's process handling, and the dashboard in headless Chromium (Debian's,
# installed when missing; the screenshot lands in target/artifacts/dashboard.png).
gateway-test: setup
	@command -v node >/dev/null || { echo "node 20 or later is required for the gateway"; exit 1; }
	@test -x /usr/bin/chromium || { echo "installing chromium (the dashboard's browser test)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }
	cd bindings-node && npm ci --no-audit --no-fund --loglevel=error
	cd bindings-node && npx napi build --platform --js native.js --dts native.d.ts
	cd $(GATEWAY) && npm ci --no-audit --no-fund --loglevel=error
	cd $(GATEWAY) && node --test --test-concurrency=1 test/*.test.js

test: setup http-clean fmt-check clippy bench-smoke unit c-test go-test python-test node-test gateway-test compare-smoke http-compare

# The HTTP conformance suite (tests/http/, see its README) runs inside the tests above: the
# engine on memory and Redis (`unit`), Express (`node-test`), FastAPI/uvicorn and
# Flask/werkzeug (`python-test`), Go net/http (`go-test`) and the reference gateway
# (`gateway-test`), each writing what it saw to target/http-conformance/. http-compare then
# requires every transcript to be there and all of them identical, byte for byte.
HTTP_RUNNERS = engine-memory engine-redis express express-redis fastapi flask go gateway
.PHONY: http-clean http-compare
http-clean:
	rm -rf target/http-conformance

http-compare:
	python3 tests/http/compare.py $(HTTP_RUNNERS)

# rustfmt and clippy come with rustup's default profile; add them where a minimal one lacks them.
setup:
	@command -v $(CARGO) >/dev/null || { echo "cargo is required: install Rust from rustup"; exit 1; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy
	@command -v redis-server >/dev/null && command -v valgrind >/dev/null && command -v cc >/dev/null || { \
		echo "installing redis-server (the Redis store's tests start their own), valgrind and a C compiler (the C ABI's tests)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server valgrind gcc >/dev/null; }

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Every test of the workspace; the last line sums up all the test binaries' results.
unit:
	@mkdir -p target; set -o pipefail; $(CARGO) test --workspace --locked 2>&1 | tee target/unit-tests.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/unit-tests.log

# The C ABI from C: tests/c/ffi_test.c against the static library, with -Werror, under
# AddressSanitizer and UBSan, then under valgrind (no leak, no error). The header itself is
# checked by `cargo test -p floodwall-ffi --test header` (part of `unit`).
C_FLAGS = -Wall -Wextra -Werror -std=c11 -g -Iinclude
C_LIBS = target/debug/libfloodwall.a -lpthread -ldl -lm
c-test:
	$(CARGO) build --locked -p floodwall-ffi
	@mkdir -p target/c
	cc $(C_FLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all tests/c/ffi_test.c $(C_LIBS) -o target/c/ffi_test_sanitized
	./target/c/ffi_test_sanitized
	cc $(C_FLAGS) tests/c/ffi_test.c $(C_LIBS) -o target/c/ffi_test
	valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=1 ./target/c/ffi_test

# The Go package over the C ABI (ffi/go): vet and tests, standard library only.
go-test: c-test
	@command -v go >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq golang-go >/dev/null; }
	cd ffi/go && GOPROXY=off GOFLAGS=-mod=mod go vet ./... && GOPROXY=off GOFLAGS=-mod=mod go test -count=1 ./...

# The Python package (bindings-python): a virtual environment in target/, the abi3 wheel
# built by maturin and installed there, then pytest (memory and Redis, FastAPI and Flask over
# real HTTP), the stubs checked against the built module (mypy.stubtest), mypy --strict on the
# package, and the peer benchmark once in its quick mode (nothing judged).
PY_VENV = target/py-venv
PY = $(PY_VENV)/bin/python
$(PY): bindings-python/requirements-dev.txt
	@command -v python3 >/dev/null || { echo "python3 is required for the Python package"; exit 1; }
	rm -rf $(PY_VENV) && python3 -m venv $(PY_VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r bindings-python/requirements-dev.txt

python-test: setup $(PY)
	rm -rf target/wheels/debug
	cd bindings-python && ../$(PY_VENV)/bin/maturin build --locked --quiet --out ../target/wheels/debug
	$(PY) -m pip install --quiet --force-reinstall --no-deps target/wheels/debug/floodwall-*.whl
	cd bindings-python && ../$(PY) -m pytest -q -p no:cacheprovider
	cd bindings-python && ../$(PY) -m mypy.stubtest floodwall
	cd bindings-python && ../$(PY) -m mypy --strict --no-incremental python/floodwall
	cd bindings-python && ../$(PY) bench/compare.py --quick

# The Python binding beside limits and PyJWT, same run (docs/PERFORMANCE.md): the release wheel.
bench-python: setup $(PY)
	rm -rf target/wheels/release
	cd bindings-python && ../$(PY_VENV)/bin/maturin build --locked --release --quiet --out ../target/wheels/release
	$(PY) -m pip install --quiet --force-reinstall --no-deps target/wheels/release/floodwall-*.whl
	cd bindings-python && ../$(PY) bench/compare.py

# The Node package (bindings-node): its pinned npm packages, the addon built by the napi-rs
# CLI, the typed usage example checked by tsc, then node --test (memory and Redis).
node-test: setup
	@command -v node >/dev/null || { echo "node 20 or later is required for the Node package"; exit 1; }
	cd bindings-node && npm ci --no-audit --no-fund --loglevel=error
	cd bindings-node && npx napi build --platform --js native.js --dts native.d.ts
	cd bindings-node && npx tsc -p tsconfig.json
	cd bindings-node && node --test --test-concurrency=1 test/

# The Node package beside rate-limiter-flexible, jsonwebtoken and express-rate-limit, same run
# (docs/PERFORMANCE.md): the release addon, the peers pinned in bindings-node/bench/package.json.
bench-node: setup
	cd bindings-node && npm ci --no-audit --no-fund --loglevel=error
	cd bindings-node/bench && npm ci --no-audit --no-fund --loglevel=error
	cd bindings-node && npx napi build --platform --release --js native.js --dts native.d.ts
	cd bindings-node && node bench/compare.js

# How long check() waits while Redis hangs, against the store timeout plus 5 ms.
bench-node-faults: setup
	cd bindings-node && npm ci --no-audit --no-fund --loglevel=error
	cd bindings-node && npx napi build --platform --release --js native.js --dts native.d.ts
	cd bindings-node && node bench/faults.js

# Runs every criterion bench once as a test (nothing is timed), so the benches keep compiling
# and their assertions hold.
bench-smoke:
	$(CARGO) test --locked -p floodwall-benches --benches

# The measurements recorded in docs/PERFORMANCE.md.
bench:
	$(CARGO) bench -p floodwall-benches --bench check -- --noplot
	$(CARGO) bench -p floodwall-benches --bench auth -- --noplot
	$(CARGO) bench -p floodwall-benches --bench balance -- --noplot
	$(CARGO) bench -p floodwall-benches --bench ffi -- --noplot
	$(CARGO) bench -p floodwall-benches --bench monitor -- --noplot

# Decisions per second and latency against a local Redis, beside redis-benchmark (docs/PERFORMANCE.md).
bench-redis: setup
	$(CARGO) bench -p floodwall-benches --bench redis_load

# JWT verification against node's jsonwebtoken and PyJWT in the same run (docs/PERFORMANCE.md).
bench-jwt: setup peers
	python3 benches/peers/jwt_compare.py

# The peers the JWT fixtures were minted with and the benchmarks compare against: node's
# jsonwebtoken (pinned by benches/peers/package-lock.json) and PyJWT in .venv.
peers:
	@command -v node >/dev/null || { echo "node is required for the peer benchmarks"; exit 1; }
	@test -d benches/peers/node_modules/jsonwebtoken || (cd benches/peers && npm ci --no-audit --no-fund)
	@test -x .venv/bin/python || python3 -m venv .venv
	@.venv/bin/python -c "import jwt, cryptography" 2>/dev/null || .venv/bin/pip install --quiet pyjwt==2.15.1 cryptography

fmt:
	$(CARGO) fmt --all

# floodwall beside its peers in ONE table, same machine, same run (docs/PERFORMANCE.md):
# governor (Rust); rate-limiter-flexible, express-rate-limit + rate-limit-redis, jsonwebtoken,
# Express under autocannon (Node); limits, PyJWT (Python); redis-benchmark's PING and EVALSHA
# as Redis's ceiling; a 4-process race on one Redis key for over-admission. It installs the
# pinned peers (bindings-node/bench, target/compare/venv), builds floodwall's pieces in release
# mode, starts and stops its own redis-server; measuring takes about 5 minutes.
# compare-smoke is the same with tiny counts (seconds once built; nothing judged).
# COMPARE_FLAGS passes options, e.g. COMPARE_FLAGS="--wait-load 0.7" to wait for a quiet machine.
.PHONY: compare compare-smoke
compare:
	python3 benches/compare/run.py $(COMPARE_FLAGS)

compare-smoke:
	python3 benches/compare/run.py --quick
