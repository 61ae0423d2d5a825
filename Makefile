# The verbs everyone needs. `make demo` and `make test` are the README's two commands.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup build demo test test-py test-rust lint format bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs the package (building the Rust extension in release mode) and the dev tools.
$(STAMP): $(BIN)/python pyproject.toml Cargo.toml $(shell find rust -name '*.rs')
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

build: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/contactsync sync --source sample examples/sample-export.csv
	$(BIN)/contactsync status

test: setup
	cargo test --quiet
	$(BIN)/pytest -q

lint: setup
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches

format: setup
	cargo fmt
	$(BIN)/ruff format python tests benches
	$(BIN)/ruff check --fix python tests benches

bench: setup
	$(BIN)/pytest benches -q --benchmark-only
	$(BIN)/python benches/headline.py --n 1000000

clean:
	rm -rf $(VENV) target
