# The two commands a newcomer needs: `make run` and `make test`. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

JS := tests/js
PROJECT_CODE := api bench/*.py bench/phases blogclient.py core manage.py notifications pages project stack tests/*.py tests/scripts

.PHONY: system-packages docker-setup-early install install-dev static-assets js-deps bench-peer run migrate test compose-test stack soak bench bench-quick schema lint format clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); \
	  else echo "python3 -m venv failed: install python3-venv (Debian) and retry." >&2; exit 1; fi; }
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.txt requirements-nodeps.txt
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	@touch $@

# GraphiQL's JS/CSS from pinned, integrity-checked npm tarballs (no CDN at run time, no Node).
# Always run: it only downloads what is missing or altered.
static-assets: $(BIN)/python
	@$(BIN)/python scripts/fetch_static_assets.py

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@

## install: create .venv with the runtime dependencies
install: $(VENV)/.installed static-assets

install-dev: install $(VENV)/.installed-dev

# Node and the npm packages the tests drive (graphql-http's audits, graphql-sse, Apollo Client),
# exactly as tests/js/package-lock.json pins them; again only when the lockfile changes.
$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	./scripts/ensure-system-packages.sh
	cd $(JS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

js-deps: $(JS)/node_modules/.installed

# The side-by-side benchmark's peer (strawberry-django) in a virtualenv of its own, from the pins in
# bench/peer/requirements.txt; rebuilt only when they change.
bench-peer: install
	@$(BIN)/python -c "from bench.phases.versus_peer import peer_python; peer_python()"

migrate: install
	$(BIN)/python manage.py migrate --noinput

## run: the product on embedded defaults (SQLite, in-memory channel layer) at http://127.0.0.1:8000
run: migrate
	@echo "Serving on http://$(HOST):$(PORT)/  (GraphiQL: http://$(HOST):$(PORT)/graphql/)"
	$(BIN)/python -m project.server -v 0 -b $(HOST) -p $(PORT) project.asgi:application

# Worker processes for `make test`. Most of a test's time is spent waiting on the servers it
# started, so a few more workers than cores pays; each module, and each group of modules sharing a
# slow session fixture, runs whole on one worker (tests/scheduling.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
PYTEST_WORKERS := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

system-packages:
	./scripts/ensure-system-packages.sh

# The Docker engine's setup for the compose tests takes minutes on a new machine: started in the
# background once the system packages are in (both use apt), it runs beside the installs below,
# and tests/fixtures_docker.py waits for what is left of it.
DOCKER_EARLY := $(CURDIR)/test-artifacts/docker-setup-early
docker-setup-early:
	./scripts/docker-setup-early.sh $(DOCKER_EARLY)

## test: lint (below), then install everything the tests need (system packages and Node too, when root) and run them
## (TEST_WORKERS=N: how many in parallel, 0 for one process; docs/development.md)
test: system-packages $(BIN)/python docker-setup-early install-dev lint js-deps bench-peer
	@# The project's bytecode, written once: the run starts a hundred-odd Python processes on this
	@# code, and where PYTHONDONTWRITEBYTECODE is set each would compile it from source again.
	$(BIN)/python -m compileall -q -j 0 $(PROJECT_CODE) > /dev/null
	BLOGPUSH_DOCKER_EARLY=$(DOCKER_EARLY) $(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

## compose-test: docker-compose.yml (and its Sentinel and failover files) on a real Docker engine (tests/test_compose*.py, part of `make test`);
## runs BLOGPUSH_DOCKER_SETUP or ../shared/docker/setup.sh (as root) when no engine answers
compose-test: install-dev
	./scripts/ensure-system-packages.sh
	$(BIN)/python -m pytest tests/test_deploy_files.py tests/test_compose.py tests/test_compose_sentinel.py tests/test_compose_failover.py

## stack: PostgreSQL + Redis + 3 Daphne instances behind HAProxy, from real processes (Ctrl-C stops it)
## (STACK_ARGS=--sentinel: Redis as a master, a replica and three sentinels; --pg-standby: PostgreSQL with a synchronous standby; --help for the rest)
stack: install
	./scripts/ensure-system-packages.sh
	$(BIN)/python -m stack $(STACK_ARGS)

## soak: 500 resuming subscribers for 10 minutes while instances are killed and Redis restarts
soak: install-dev
	./scripts/ensure-system-packages.sh
	$(BIN)/python -m stack.soak $(SOAK_ARGS)

## bench: the benchmark on real processes (~17 min): bench/results/<date>.json + .md, tables in docs/benchmarks.md
bench: install-dev bench-peer
	./scripts/ensure-system-packages.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

## bench-quick: the same harness with tiny sizes (under a minute); results in test-artifacts/bench-quick
bench-quick: install-dev bench-peer
	./scripts/ensure-system-packages.sh
	$(BIN)/python -m bench --quick --out test-artifacts/bench-quick $(BENCH_ARGS)

## schema: rewrite schema.graphql from the live schema (then review the diff)
schema: install
	$(BIN)/python manage.py graphql_schema --schema project.schema.schema --out schema.graphql

## lint: ruff (lint + format check) and mypy with django-stubs; LINT_PATHS narrows it
LINT_PATHS ?= .
lint: install-dev
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy $(LINT_PATHS)

format: install-dev
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

clean:
	rm -rf $(VENV) staticfiles static-vendor .pytest_cache .mypy_cache .ruff_cache $(JS)/node_modules
