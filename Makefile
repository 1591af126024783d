# Treecast: every target installs what it needs into .venv from the lock files:
# requirements.lock (what the service runs, all the Docker image installs) and
# requirements-dev.lock (tests, linters, the PostgreSQL server for the tests), then the
# project itself, so .venv/bin/treecast is the command line.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The interpreter .venv is made with: its version and a digest of its real path. Another
# PYTHON (or an upgraded python3) has another id, so .venv is made anew with it.
PYTHON_ID := $(shell $(PYTHON) -c 'import hashlib, os, platform, sys; print(platform.python_version() + "-" + hashlib.sha256(os.path.realpath(sys.executable).encode()).hexdigest()[:8])' 2>/dev/null)
STAMP := $(VENV)/.installed-$(PYTHON_ID)

.PHONY: install test lint typecheck unit demo run bench fuzz clean browser sshd lfs screenshot

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@test -n "$(PYTHON_ID)" || { echo "PYTHON=$(PYTHON) does not run; set it to a Python 3.11-3.13" >&2; exit 1; }
	@if [ -d $(VENV) ] && [ ! -e $(VENV)/.python-$(PYTHON_ID) ]; then \
	  echo "$(VENV) was made with another Python; making it anew with $(PYTHON)"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	touch $(VENV)/.python-$(PYTHON_ID)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet -r requirements-dev.lock
	@# Editable: code edits need no reinstall. The warning it prints is about that very choice.
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The rooms' contracts (docs/contracts.md, pyproject.toml's [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy .

# Headless Chromium (Debian's package) for the Web UI check; installed when we may.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the Web UI test"; \
	    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "note: could not install chromium; the Web UI test will be skipped"; \
	  else echo "note: chromium is not installed; the Web UI test will be skipped"; fi; }

# Debian's OpenSSH server for the deploy key tests (they start their own sshd on
# 127.0.0.1); installed when we may, otherwise those tests are skipped with the reason.
sshd:
	@test -x /usr/sbin/sshd || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing openssh-server for the deploy key tests"; \
	    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; } \
	      || echo "note: could not install openssh-server; the ssh tests will be skipped"; \
	  else echo "note: /usr/sbin/sshd is not installed; the ssh tests will be skipped"; fi; }

# Debian's git-lfs for the submodule and LFS tests: it pushes the test repositories' objects
# to their LFS server and makes the reference checkout (`git lfs pull`). The worker does
# not use it (it speaks the LFS Batch API itself), so the Docker image does not install it.
lfs:
	@command -v git-lfs >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing git-lfs for the submodule and LFS tests"; \
	    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git-lfs >/dev/null; } \
	      || echo "note: could not install git-lfs; the LFS tests will be skipped"; \
	  else echo "note: git-lfs is not installed; the LFS tests will be skipped"; fi; }

# pytest-xdist: one test process per core (`auto`), each with its own servers (one dev
# server, one time-skipping server, one PostgreSQL: tests/conftest.py); tests go to
# whichever process is free. PYTEST_WORKERS=0 runs them all in this process.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist worksteal
# pytest rewrites the asserts of ~430 modules (the tests, and the hypothesis and
# schemathesis plugins) in each process; with bytecode off it cannot keep the result in
# __pycache__ and every run and worker does it again (~7 s of CPU each).
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/pytest

# The whole suite: lint, types, unit, PostgreSQL, time-skipping and dev-server tests.
test: lint typecheck browser sshd lfs
	$(PYTEST) -q $(PYTEST_PARALLEL)

# The tests that need no server (no Temporal, PostgreSQL, sshd or browser): what
# tests/conftest.py does not mark `servers`, but for the few marked `slow` (heavy,
# Treecast's own processes, real-time waits: `make test` runs them). Three processes per
# two cores: these tests wait on git and sockets part of the time, and each process pays
# ~5 s to start and collect (2 idle cores, temp folders in memory, a quarter of the
# examples: 54-64 s with three, 66 s with four).
UNIT_WORKERS ?= $(shell echo $$(( $$(nproc) * 3 / 2 )))
# Their temp folders (TMPDIR: pytest's tmp_path, tempfile's) in memory when /dev/shm is a
# tmpfs with 2 GB free that may run programs (tests run scripts they write there): the
# tests make and remove git repositories, thousands of small folders, and on a disk each
# rmdir can cost a millisecond (this machine's). On 2 loaded cores: 199 -> 129 s wall,
# 172 -> 134 s of CPU (39 -> 15 s of it in the kernel). `UNIT_TMPDIR=` keeps the usual one.
# The property-based tests run a quarter of their examples (tests/support/fuzzing.py:
# HYPOTHESIS_PROFILE=unit), the quick loop while working; `make test` runs them all.
UNIT_TMPDIR ?= $(shell d=$$(mktemp -d /dev/shm/treecast-probe.XXXXXX 2>/dev/null) && { \
  [ "$$(df -Pk $$d | awk 'NR == 2 {print $$4}')" -ge 2097152 ] && printf '\043!/bin/sh\n' > $$d/run \
  && chmod +x $$d/run && $$d/run && echo /dev/shm; rm -rf $$d; })
unit: $(STAMP)
	$(if $(UNIT_TMPDIR),TMPDIR=$(UNIT_TMPDIR) )HYPOTHESIS_PROFILE=unit $(PYTEST) -q -m "not servers and not slow" -n $(UNIT_WORKERS) --dist worksteal

# Re-take docs/ui-breaker-open.png (the Web UI filtered by breaker state).
screenshot: $(STAMP) browser
	$(BIN)/python -m examples.ui_screenshot

# Start the Temporal dev server (Web UI on :8233), a worker and the HTTP API; Ctrl-C stops all.
run: $(STAMP)
	TREECAST_DEV=1 TREECAST_ALLOW_FILE_URLS=1 $(BIN)/python worker.py --dev & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker' EXIT INT TERM; \
	sleep 2; echo "HTTP API on http://$${TREECAST_API_LISTEN:-127.0.0.1:8000} (OpenAPI UI at /docs)"; \
	TREECAST_DEV=1 TREECAST_ALLOW_FILE_URLS=1 $(BIN)/python -m treecast.api

# The guided tour: dev server, worker, example receiver, this repository synced to it.
demo: $(STAMP)
	TREECAST_DEV=1 TREECAST_ALLOW_PRIVATE_URLS=1 TREECAST_ALLOW_FILE_URLS=1 $(BIN)/python -m examples.demo $(if $(DEMO_ONCE),--once,)

# The property-based tests of hostile input, run much longer than in `make test`.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q tests/base/test_globs.py tests/base/test_paths.py \
	  tests/hostile/test_urls_hostile.py tests/e2e/test_receiver.py tests/hostile/test_fuzz_parsers.py

bench: $(STAMP)
	$(BIN)/python -m bench.git_snapshot
	$(BIN)/python -m bench.delivery
	$(BIN)/python -m bench.sync_latency
	$(BIN)/python -m bench.batch
	$(BIN)/python -m bench.idle_checks
	$(BIN)/python -m bench.polling
	$(BIN)/python -m bench.worker_cpu --activities 100
	$(BIN)/python -m bench.first_wave --repos 1000 --floor
	$(BIN)/python -m bench.repository_contents
	$(BIN)/python -m bench.mirrors

clean:
	rm -rf $(VENV) .treecast .pytest_cache .mypy_cache .ruff_cache
