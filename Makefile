# Two commands matter on a fresh machine: `make run` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two installs: `make run` needs only the receiver's runtime dependencies; `make test` (and every
# developer target) adds the bridge, the test toolchain and the documentation site.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-dev
DOCS_PORT ?= 8008
LINT_PATHS := receiver bridge tests migrations posthog scripts bench
# pip's own warnings (e.g. about a machine's index configuration) mean nothing to someone who
# asked to run the receiver; errors still show.
PIP_QUIET := $(PY) -m pip install --quiet --quiet --disable-pip-version-check

.PHONY: run test test-fast test-faults demo bench bench-smoke lint venv clean rasa-venv browser-deps \
	sdk013-venv security-deps mcp-node-deps ha-deps docs docs-build

$(RUN_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the receiver into $(VENV) (the first time takes about a minute)..."
	@$(PIP_QUIET) --upgrade pip
	@$(PIP_QUIET) -e .
	@touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $(STAMP) $(RUN_STAMP)

venv: $(STAMP)

## Start an embedded Postgres (or use RECEIVER_DATABASE_URL), migrate, and serve.
run: $(RUN_STAMP)
	@$(VENV)/bin/receiver serve

## Serve the documentation site on http://127.0.0.1:$(DOCS_PORT)/ (rebuilt on every change).
docs: $(STAMP)
	@echo "Documentation site on http://127.0.0.1:$(DOCS_PORT)/ (rebuilds on change; Ctrl-C stops it)"
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --quiet --dev-addr 127.0.0.1:$(DOCS_PORT)

## Build the site into ./site with --strict, as the test suite does.
docs-build: $(STAMP)
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --quiet --strict --site-dir site

## The whole suite against a throwaway Postgres; then fails if the tests changed the work tree
## (tests write only to git-ignored places such as build/).
test: $(STAMP) browser-deps rasa-venv sdk013-venv security-deps mcp-node-deps ha-deps
	$(PY) -m ruff check $(LINT_PATHS)
	@before="$$(git status --porcelain 2>/dev/null)"; \
	$(PY) -m pytest -q -ra; rc=$$?; \
	after="$$(git status --porcelain 2>/dev/null)"; \
	if [ "$$before" != "$$after" ]; then \
	  echo "make test changed the work tree (tests must write only to git-ignored places):"; \
	  diff <(echo "$$before") <(echo "$$after"); exit 1; \
	fi; exit $$rc

## Only the long-running fault tests (kill -9, Postgres outage, SIGTERM); `make test` runs them too.
test-faults: $(STAMP)
	$(PY) -m pytest -q -ra -m slow

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not browser and not rasa"

lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)

browser-deps:
	@bash scripts/browser-deps.sh

## valgrind, which the scanner tests use to count instructions (tests/security/opcount.py).
security-deps:
	@bash scripts/security-deps.sh

## The whole loop on one machine: receiver, demo product, bridge, action server + Rasa (with a Python 3.10), demo app with the chat widget (Ctrl-C stops all).
demo: $(STAMP)
	@bash scripts/demo.sh

rasa-venv:
	@bash scripts/rasa-venv.sh

## The official MCP TypeScript SDK for the Node client test (tests/mcp_node, npm ci).
mcp-node-deps:
	@bash scripts/mcp-node-deps.sh
## pg_auto_failover (Postgres 15) and haproxy from Debian, for tests/ha and docs/high-availability.md.
ha-deps:
	@bash scripts/ha-deps.sh

## The stock autoplay-sdk 0.13.0 in a venv of its own (tests drive it in a subprocess).
sdk013-venv:
	@bash scripts/sdk013-venv.sh

## Benchmark (not part of `make test`): table + docs/bench/results.json + results.png, ~4 min.
bench: $(STAMP)
	@bash bench/run.sh $(ARGS)

## The benchmark harness end to end at toy sizes (~40 s; also part of `make test`).
bench-smoke: $(STAMP)
	$(PY) -m pytest -q tests/bench

clean:
	rm -rf $(VENV) .venv-rasa .venv-sdk013 .data node_modules tests/mcp_node/node_modules site build
