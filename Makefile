# The two commands a newcomer needs: `make demo` and `make test`.
# Both build a private virtualenv in .venv on first use (Python >= 3.10).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench compose-check clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/socs-tcp demo

test: $(VENV)/.installed
	$(BIN)/pytest

# ruff, the version setup.cfg pins, with the rules in pyproject.toml: the whole tree.
lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.installed
	$(BIN)/python bench/compare.py

# The docker compose deployment brought up for real and checked (as root: it
# installs Debian's docker.io and runs a private dockerd; see docker/ci-up.sh).
compose-check: $(VENV)/.installed
	CI_UP_PYTHON=$(abspath $(BIN))/python bash docker/ci-up.sh

clean:
	rm -rf $(VENV) *.egg-info
