# Two commands matter on a fresh machine: `make run` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-faults demo bench bench-smoke lint venv clean rasa-venv browser-deps sdk013-venv ha-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## Start an embedded Postgres (or use RECEIVER_DATABASE_URL), migrate, and serve.
run: $(STAMP)
	$(VENV)/bin/receiver serve

## The whole suite against a throwaway Postgres.
test: $(STAMP) browser-deps rasa-venv sdk013-venv ha-deps
	$(PY) -m ruff check receiver bridge tests migrations posthog scripts bench
	$(PY) -m pytest -q -ra

## Only the long-running fault tests (kill -9, Postgres outage, SIGTERM); `make test` runs them too.
test-faults: $(STAMP)
	$(PY) -m pytest -q -ra -m slow

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not browser and not rasa"

lint: $(STAMP)
	$(PY) -m ruff check receiver bridge tests migrations posthog scripts bench

browser-deps:
	@bash scripts/browser-deps.sh

## The whole loop on one machine: receiver, demo product, bridge, action server + Rasa (with a Python 3.10), demo app with the chat widget (Ctrl-C stops all).
demo: $(STAMP)
	@bash scripts/demo.sh

rasa-venv:
	@bash scripts/rasa-venv.sh

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
	rm -rf $(VENV) .venv-rasa .venv-sdk013 .data node_modules
