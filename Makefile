# Two commands do everything: `make run` (install and start the stack) and `make test`.
# `make run` installs only what running needs; `make test` (and `make install`, for developers)
# adds the test tools (pytest, ruff, Playwright, schemathesis: most of the download).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-stamp
TEST_STAMP := $(VENV)/.test-stamp

.PHONY: install run test lint bench bench-peers clean

$(RUN_STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Aurora needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	@# --no-compile: Python compiles what it imports on first use; compiling every installed
	@# module up front was a sixth of the install on a 2-core machine
	$(BIN)/python -m pip install --quiet --no-compile -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

install: $(TEST_STAMP)

# UP_ARGS: options for `aurora up`, e.g. make run UP_ARGS="--port 9300 --port 9301"
run: $(RUN_STAMP)
	$(BIN)/aurora up $(UP_ARGS)

test: $(TEST_STAMP)
	$(BIN)/ruff check aurora tests bench
	$(BIN)/python -m pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check aurora tests bench

bench: $(TEST_STAMP)
	$(BIN)/python bench/run.py

# n8n and Prefect beside Aurora (installs them under bench/peers/.cache first; not part of `make test`)
bench-peers: install
	bash bench/peers/install.sh
	$(BIN)/python bench/peers/peers.py

clean:
	rm -rf $(VENV) var build dist *.egg-info
