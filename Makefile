# carousel: the two commands of the Quick start (`make demo`, `make test`) and their bootstrap.
# A fresh machine needs only Python 3.11+ and Java 17+; everything else is installed here.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STORE := var/demo-store
export AIRFLOW_HOME := $(CURDIR)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export GX_ANALYTICS_ENABLED := false
export PYSPARK_PYTHON := $(CURDIR)/$(BIN)/python

.PHONY: demo test unit bootstrap venv lint browsers clean-var

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) infra/prereqs.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# Java check + a reachable Redis (CAROUSEL_REDIS_URL if it answers, else the managed one on :6399).
bootstrap: venv
	@$(BIN)/carousel infra up

# ruff (lint and format), mypy, and the architecture's import contracts (pyproject.toml: [tool.importlinter]).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy carousel configs jobs serving quality infra dags
	$(BIN)/lint-imports

# The unit tier alone: no JVM, Redis or network (sockets are blocked there), in seconds.
unit: venv
	$(BIN)/pytest tests/unit -q -p no:cacheprovider

# The browser tests drive Debian's chromium + chromedriver: installed here when the machine lacks them.
browsers: venv
	@$(BIN)/python -c "from infra.browser import ensure_chromium; print('chromium:', *ensure_chromium())"

test: bootstrap lint browsers
	@url=$$($(BIN)/carousel infra up --print-url) && \
	  CAROUSEL_REDIS_URL=$$url $(BIN)/pytest -q -p no:cacheprovider --timeout=900 --durations=25 --numprocesses=2 --dist=loadfile

demo: bootstrap
	@url=$$($(BIN)/carousel infra up --print-url) && export CAROUSEL_REDIS_URL=$$url CAROUSEL_DEMO=true && \
	  $(BIN)/python -m infra.demo
