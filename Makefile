# Treecast: every target installs what it needs into .venv from requirements.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck unit demo run bench clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# The whole suite: lint, types, unit, PostgreSQL, time-skipping and dev-server tests.
test: lint typecheck
	$(BIN)/pytest -q

# Start the Temporal dev server (Web UI on :8233) and a worker; Ctrl-C stops both.
run: $(STAMP)
	TREECAST_DEV=1 $(BIN)/python worker.py --dev

# The guided tour: dev server, worker, example receiver, this repository synced to it.
demo: $(STAMP)
	TREECAST_DEV=1 TREECAST_ALLOW_PRIVATE_URLS=1 $(BIN)/python -m examples.demo $(if $(DEMO_ONCE),--once,)

bench: $(STAMP)
	$(BIN)/python -m bench.git_snapshot
	$(BIN)/python -m bench.delivery

clean:
	rm -rf $(VENV) .treecast .pytest_cache .mypy_cache .ruff_cache
