# billvend: `make run` to use it, `make test` to test it. Nothing else needed
# but Python 3.11 and npm (both only to install pinned packages).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
HTMX := static/vendor/htmx.min.js
PORT ?= 5000
# maildev's ports (the Procfile's mail): SMTP_URL points at the first.
MAIL_SMTP_PORT ?= 1025
MAIL_WEB_PORT ?= 1080
PYTEST_ARGS ?=

.PHONY: install run sandbox test simulate bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# htmx comes pinned from the npm registry (package-lock.json) and is served
# from /static/vendor when HTMX_URL points there; never committed. maildev
# (the Procfile's mail, make run's mail catcher) comes pinned the same way.
$(HTMX): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	mkdir -p $(dir $(HTMX))
	cp node_modules/htmx.org/dist/htmx.min.js $(HTMX)

install: $(VENV)/.installed $(HTMX)

run: install
	$(BIN)/flask --app wsgi db upgrade
	@echo
	@echo "  billvend is starting at http://127.0.0.1:$(PORT)   (Ctrl-C stops web, worker, sandbox and mail)"
	@echo "  the mail it sends: http://127.0.0.1:$(MAIL_WEB_PORT) (maildev)"
	@echo
	@# /metrics adds up the web processes' and the worker's numbers from here
	@# (prometheus_client multiprocess mode); emptied at each start.
	@# honcho gives each process its own PORT (web $(PORT), the others +100,
	@# +200), so the sandbox is told where the web process is: its webhooks
	@# (card payments, bank transfers) go there, not to its own PORT.
	rm -rf instance/prometheus && mkdir -p instance/prometheus
	PATH="$(BIN):$$PATH" PORT=$(PORT) HTMX_URL="$${HTMX_URL:-/$(HTMX)}" \
		PROMETHEUS_MULTIPROC_DIR="$${PROMETHEUS_MULTIPROC_DIR:-$(CURDIR)/instance/prometheus}" \
		PAYSTACK_WEBHOOK_URL="$${PAYSTACK_WEBHOOK_URL:-http://127.0.0.1:$(PORT)/webhooks/paystack}" \
		MAIL_SMTP_PORT=$(MAIL_SMTP_PORT) MAIL_WEB_PORT=$(MAIL_WEB_PORT) \
		SMTP_URL="$${SMTP_URL:-smtp://127.0.0.1:$(MAIL_SMTP_PORT)}" \
		$(BIN)/honcho start web worker sandbox mail

# The sandbox server alone: the VTpass- and Paystack-shaped APIs, listening
# where SANDBOX_URL points (127.0.0.1:5055 by default; VTPASS_BASE_URL and
# PAYSTACK_BASE_URL default to it, and pointing either elsewhere leaves it there).
# `make run` always starts it: FUNDING_GATEWAY=paystack, the default, funds
# wallets through it.
sandbox: install
	$(BIN)/python -m billvend.sandbox

# The whole suite: on SQLite, then again on PostgreSQL when TEST_DATABASE_URL
# is set (CI sets it; see .ci/run). In CI (CI=true) a missing
# TEST_DATABASE_URL fails the run instead of skipping the PostgreSQL pass.
test: install
	@if [ -z "$$TEST_DATABASE_URL" ] && [ "$$CI" = "true" ]; then \
		echo "== CI=true but TEST_DATABASE_URL is not set: the PostgreSQL pass is required" >&2; \
		exit 1; \
	fi
	BILLVEND_TEST_BACKEND=sqlite $(BIN)/python -m pytest $(PYTEST_ARGS)
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
		echo "== again on PostgreSQL ($$TEST_DATABASE_URL)"; \
		BILLVEND_TEST_BACKEND=postgresql $(BIN)/python -m pytest -m "not once" $(PYTEST_ARGS); \
	else \
		echo "== TEST_DATABASE_URL not set: PostgreSQL pass skipped (CI=true makes this an error)"; \
	fi

# The deterministic simulator (docs/simulation.md): one seeded run of the whole
# money system with faults. SEED empty: a fresh random seed (printed first).
# BILLVEND_TEST_BACKEND=postgresql (+ TEST_DATABASE_URL) runs it on a throwaway
# PostgreSQL database, as the tests do; SIM_DATABASE_URL names one outright.
SEED ?=
STEPS ?= 2000
SIM_DATABASE_URL ?=
simulate: install
	$(BIN)/python -m tests.simulation --steps $(STEPS) $(if $(SEED),--seed $(SEED)) \
		$(if $(SIM_DATABASE_URL),--database-url $(SIM_DATABASE_URL))

# Hot-wallet throughput on PostgreSQL (BENCH_DATABASE_URL, default the local
# server), admin page timings with 100k payments, then the web tier under
# load (the Procfile's processes on PostgreSQL + a private Redis, wrk), with
# each request's per-step costs (bench/profile_requests.py) before it; each
# prints a table for docs/benchmarks.md. Not part of `make test`.
bench: install
	$(BIN)/python bench/hot_wallet.py
	$(BIN)/python bench/admin_lists.py
	$(BIN)/python bench/profile_requests.py
	PATH="$(BIN):$$PATH" $(BIN)/python bench/web_load.py

clean:
	rm -rf $(VENV) node_modules static/vendor instance .pytest_cache
