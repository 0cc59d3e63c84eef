# The two commands a newcomer types are `make run` and `make test`; both set up .venv first.
# `make run` installs only what serving needs (requirements.lock); `make test`, `lint` and `bench`
# add the development tools (requirements-dev.lock). Each set has its own stamp file, so a
# lock file that changes is reinstalled on the next command that needs it.
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
LOCK_VENV := .venv-lock
PIP_TOOLS_VERSION := 7.6.2

.PHONY: install install-dev run test test-fast lint bench bench-quick lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# --require-hashes: every wheel must match the lock byte for byte. The project itself cannot be
# hashed, so it is installed editable afterwards with --no-deps (its dependencies are the lock)
# and --no-build-isolation, using the setuptools pinned (and hashed) in the lock.
$(RUN_STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(PIP) install --require-hashes -r requirements.lock
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

$(DEV_STAMP): requirements-dev.lock pyproject.toml | $(BIN)/python
	$(PIP) install --require-hashes -r requirements-dev.lock
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

run: install
	$(BIN)/game-api serve --host $(HOST) --port $(PORT) --workers 2 --bootstrap-admin

test: install-dev
	$(BIN)/pytest

test-fast: install-dev
	$(BIN)/pytest -m "not slow"

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app configs bench
	$(BIN)/lint-imports --no-cache

bench: install-dev
	$(BIN)/python -m bench.run

bench-quick: install-dev
	$(BIN)/python -m bench.run --quick

# Regenerates both lock files from pyproject.toml. pip-compile keeps the versions already in a lock
# (upgrade one with e.g. `make lock LOCK_ARGS="--upgrade-package fastapi"`). The machine's pip
# configuration is ignored so that only the public index is consulted: a local wheelhouse or
# mirror would put its own file hashes, or its paths, into the lock. The lock files' headers say
# "make lock"; this is the exact command. lock-extras.in says why it is a second input.
LOCK_FLAGS := --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host
LOCK_ENV := env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT \
	PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock"
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_ENV) $(LOCK_VENV)/bin/python -m pip install --quiet pip-tools==$(PIP_TOOLS_VERSION)
	$(LOCK_ENV) $(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) \
		--output-file=requirements.lock pyproject.toml lock-extras.in
	$(LOCK_ENV) $(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) --extra=dev \
		--output-file=requirements-dev.lock pyproject.toml lock-extras.in

clean:
	rm -rf $(VENV) $(LOCK_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
