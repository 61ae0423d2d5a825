# The verbs everyone needs. `make demo` and `make test` are the README's two commands.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup build demo test test-py test-rust lint format bench clean postgres wheel wheel-check chromium sqlite3-shell

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs the package (building the Rust extension in release mode) and the dev tools.
$(STAMP): $(BIN)/python pyproject.toml Cargo.toml $(shell find rust -name '*.rs')
	@echo "setup: building the Rust extension (release) and installing the dependencies into .venv/;"
	@echo "       the first time takes 3-5 minutes on 2 cores (quiet until it is done)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# PostgreSQL server binaries for the SQL-source tests (they start their own
# server on a free local port). Installed from Debian's packages when missing
# and we may; without them those tests skip with a message saying so.
PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
postgres:
ifeq ($(PG_BIN),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
		|| echo "note: could not install postgresql; the PostgreSQL tests will skip"; \
	else echo "note: no PostgreSQL binaries; the PostgreSQL tests will skip"; fi
endif

# Debian's chromium for the web console's browser tests (tests/test_web_browser.py,
# driven by Playwright at that executable; no browser is downloaded). Installed
# when missing and we may; without it those tests skip with a message saying so.
chromium:
	@if ! command -v chromium >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "note: could not install chromium; the browser tests will skip"; \
		else echo "note: no chromium; the browser tests will skip"; fi; \
	fi


# The sqlite3 shell: benches/headline.py times its `.import` as the floor the
# import is measured against. Installed from Debian's package when missing.
sqlite3-shell:
	@command -v sqlite3 >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 >/dev/null) \
		|| echo "note: could not install sqlite3; benches/headline.py needs it"; \
	else echo "note: no sqlite3 shell; benches/headline.py needs it"; fi; }


setup: $(STAMP) postgres chromium sqlite3-shell

build: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo has a mirror of its own (.venv/demo-mirror.db) and reads no config
# file, so it neither touches a configured mirror nor trips over its sources.
DEMO := XDG_CONFIG_HOME=$(CURDIR)/.venv/demo-config CONTACTSYNC_CONFIG= $(BIN)/contactsync --db .venv/demo-mirror.db
demo: $(STAMP)
	$(DEMO) sync --source sample examples/sample-export.csv
	$(DEMO) status
	@echo "the demo mirror is .venv/demo-mirror.db: .venv/bin/contactsync --db .venv/demo-mirror.db contacts list | web"

# The wheel an admin installs, in target/wheels/: release, manylinux_2_28 (glibc
# 2.28 or newer; maturin checks the symbols), abi3 (any CPython from 3.11).
# Linked by zig (the ziglang package) against glibc 2.28's symbols: this host's
# glibc is newer. The first build compiles into target/x86_64-unknown-linux-gnu/
# (about 3 min of CPU), later ones reuse it.
WHEEL_DIR := target/wheels
MATURIN_WHEEL := PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/maturin build --release --zig \
	--compatibility manylinux_2_28
wheel: $(STAMP)
	rm -f $(WHEEL_DIR)/contactsync_agent-*.whl
	$(MATURIN_WHEEL) --out $(WHEEL_DIR)

# The wheel installed into a fresh venv (no -e, no source tree, no extras) and run
# there: the demo's sync and status, install-service, completion, a sql source
# without its extra. `make test` runs the same tests on a wheel packed from the
# release build `make setup` made (tagged linux: the manylinux link is this target).
wheel-check: wheel
	CONTACTSYNC_WHEEL="$$(ls $(WHEEL_DIR)/contactsync_agent-*.whl)" \
		$(BIN)/pytest -q -p no:cacheprovider tests/test_packaging_wheel.py

test: setup
	cargo test --quiet
	$(BIN)/pytest -q

lint: setup
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/mypy python/contactsync_agent
	$(BIN)/lint-imports --no-cache

format: setup
	cargo fmt
	$(BIN)/ruff format python tests benches
	$(BIN)/ruff check --fix python tests benches

bench: setup
	$(BIN)/pytest benches -q --benchmark-only
	$(BIN)/python benches/headline.py --n 1000000

clean:
	rm -rf $(VENV) target
