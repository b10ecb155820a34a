# Two commands do everything: `make run` (install and start the stack) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench bench-peers clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Aurora needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/aurora up

test: install
	$(BIN)/ruff check aurora tests bench
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check aurora tests bench

bench: install
	$(BIN)/python bench/run.py

# n8n and Prefect beside Aurora (installs them under bench/peers/.cache first; not part of `make test`)
bench-peers: install
	bash bench/peers/install.sh
	$(BIN)/python bench/peers/peers.py

clean:
	rm -rf $(VENV) var build dist *.egg-info
