# One-command local stack and tests. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt requirements-local.txt | sha256sum | cut -c1-12)
APT_PACKAGES := espeak-ng ffmpeg sox chromium

.PHONY: help install system-deps dev up down reset status test test-faults lint format bench bench-deps bench-webhook bench-transcribe bench-archive bench-sql clean

help:
	@echo "make dev          run the whole stack in the foreground (Ctrl-C or make down stops it)"
	@echo "make up / down    the same stack in the background / stop it, however started (data kept)"
	@echo "make status       what runs of the stack, its pids and ports"
	@echo "make reset        stop the stack and delete its local data"
	@echo "make test         the whole test suite against servers of its own"
	@echo "make lint         ruff and mypy"
	@echo "make bench        the benchmarks (see README)"
	@echo "make bench-webhook  webhook throughput, latency and CPU per delivery"
	@echo "make bench-archive  messages archived per second, webhook-to-stored latency"
	@echo "make bench-sql      each monitoring query on 1 million messages: time and plan"
	@echo "make eval-classify  the note/order classifier on its labelled corpus"
	@echo "make train-classifier  train the learned reading again (after the corpus or the rules' words change)"

$(STAMP): requirements.txt requirements-dev.txt requirements-local.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# System packages the local stack and the tests use: PostgreSQL server, espeak-ng and ffmpeg
# (voice-note tests), Chromium (admin page test). Installed only when missing, and only as root.
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v sox >/dev/null || missing="$$missing sox"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends --no-upgrade $$missing >/dev/null \
	      || echo "warning: could not install$$missing (the tests that need them are skipped, saying why)"; \
	  else \
	    echo "warning: missing system packages:$$missing (install them with apt-get as root)"; \
	  fi; \
	fi

dev: install system-deps
	@$(PY) scripts/devstack.py dev

up: install system-deps
	@$(PY) scripts/devstack.py up

down:
	@test -x $(PY) && $(PY) scripts/devstack.py down || true

reset:
	@test -x $(PY) && $(PY) scripts/devstack.py reset || rm -rf .dev

status:
	@if test -x $(PY); then $(PY) scripts/devstack.py status; else echo "not installed yet: make up installs and starts the stack"; fi

test: install system-deps
	@HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

test-faults: install system-deps
	@HF_HUB_OFFLINE=1 $(PY) -m pytest -m faults $(PYTEST_ARGS)

lint: install
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy app workers

format: install
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

# wrk, the load generator of the webhook benchmark (the benchmark falls back to a Python one).
bench-deps:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null \
	      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; } \
	      || echo "warning: could not install wrk (the webhook benchmark uses its Python load generator)"; \
	  else \
	    echo "warning: wrk is missing (apt-get install wrk as root); the webhook benchmark uses its Python load generator"; \
	  fi; }

bench: install system-deps bench-deps
	@$(PY) bench/run_all.py

bench-webhook: install system-deps bench-deps
	@$(PY) bench/webhook_bench.py $(BENCH_ARGS)

# The webhook before and after a change, in one run: make bench-compare BASE=<git revision>.
bench-compare: install system-deps bench-deps
	@$(PY) bench/webhook_compare.py $(if $(BASE),--base $(BASE)) $(BENCH_ARGS)

bench-transcribe: install system-deps
	@HF_HUB_OFFLINE=1 $(PY) bench/transcribe_bench.py $(BENCH_ARGS)

bench-archive: install system-deps
	@$(PY) bench/archive_bench.py $(BENCH_ARGS)

bench-sql: install system-deps
	@$(PY) bench/sql_bench.py $(BENCH_ARGS)

clean: reset
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Note/order classifier on the labelled corpus (tests/corpus/classifier): precision, recall, misses.
# EVAL_ARGS="--split heldout", "--model-stub"; the real model with OPENAI_API_KEY and CLASSIFIER_MODEL.
.PHONY: eval-classify train-classifier bench-compare
eval-classify: install
	@$(PY) bench/eval_classify.py $(EVAL_ARGS)

# The learned reading (app/orders/learned_model.json), trained again on the corpus's tuning splits.
train-classifier: install
	@$(PY) bench/train_classifier.py
