# Two commands do everything: `make run` (install and start the stack) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench clean

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

clean:
	rm -rf $(VENV) var build dist *.egg-info
