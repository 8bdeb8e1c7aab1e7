# execsentry — every entry point a developer or CI needs.
# `make run` and `make test` do their own set-up on a fresh Debian machine.

CARGO ?= cargo
RELEASE_BIN := target/release/execsentry
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Extra arguments for `make run`, e.g. ARGS=--events
ARGS ?=

.PHONY: all build setup run test lint unit bench soak fuzz clean

all: build

build:
	$(CARGO) build --release

# Installs what the tests need (apt packages, rustup components, a running
# dockerd and the local busybox image). Idempotent.
setup:
	$(SUDO) bash tests/support/setup.sh

# The sensor with its shipped rules and config, alerts as JSON on stdout.
run: build
	$(SUDO) $(RELEASE_BIN) run --config packaging/execsentry.toml --rules rules --output stdout $(ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Unit tests only: no root, no containers.
unit:
	$(CARGO) test --lib

# Benches and examples are compiled by clippy above, not run: a benchmark
# is `make bench`'s job. The summary at the end lists what ran, what
# failed and every test that passed only by skipping (no root, no Docker);
# with CI=true or EXECSENTRY_REQUIRE_ALL=1 a skip is a failure instead.
test: setup lint
	bash tests/support/test-summary.sh $(CARGO) test --lib --bins --tests -- --test-threads=2

bench: setup
	bash bench/run.sh

# About a minute of exec storm at the machine's full rate against each
# capture mode: events received vs. lost vs. counted, RSS over three storms.
# Not part of `make test` (CI time); the report lands in target/bench/.
soak: setup
	bash bench/run.sh --count 100000 --only fanotify,proc

# libFuzzer over every target in fuzz/ (nightly + cargo-fuzz; not in CI).
# FUZZ_SECONDS per target (default 180), FUZZ_JOBS in parallel (default 2);
# new inputs are minimized into fuzz/corpus, a crash input lands in
# fuzz/artifacts and makes it exit 1.
fuzz:
	bash bench/fuzz.sh

clean:
	$(CARGO) clean
include packaging/package.mk
