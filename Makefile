# The two commands a newcomer needs: `make demo` and `make test`.
# Both build a private virtualenv in .venv on first use (Python >= 3.10).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow lint docs wheel-smoke bench compose-check clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench,docs]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/socs-tcp demo

# The default suite, ~3.5 min on 2 cores: everything but the tests marked `slow`
# (setup.cfg's addopts) and the SOCS bridge agents' tier, which skips itself.
test: $(VENV)/.installed
	$(BIN)/pytest

# The slow tier, ~2 min: the 30 s soak, the docker topology as processes, the
# bench smoke run, and end-to-end runs whose path the default suite also takes once.
test-slow: $(VENV)/.installed
	$(BIN)/pytest -m slow

# ruff, the version setup.cfg pins, with the rules in pyproject.toml: the whole tree;
# mypy (with mypy-zope, as pinned in setup.cfg) on socs_tcp and agents, configured in pyproject.toml.
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

# The documentation site, offline, warnings as errors (docs/_build/html/index.html).
# Its diagrams need graphviz's `dot` (Debian: apt-get install graphviz).
docs: $(VENV)/.installed
	@command -v dot >/dev/null || { echo "make docs: graphviz's dot is missing (apt-get install graphviz)" >&2; exit 1; }
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# The sdist and wheel built, the wheel installed in a fresh venv, used outside the repository.
wheel-smoke: $(VENV)/.installed
	.ci/wheel-smoke $(BIN)/python

bench: $(VENV)/.installed
	$(BIN)/python bench/compare.py

# The docker compose deployment brought up for real and checked (as root: it
# installs Debian's docker.io and runs a private dockerd; see docker/ci-up.sh).
compose-check: $(VENV)/.installed
	CI_UP_PYTHON=$(abspath $(BIN))/python bash docker/ci-up.sh

clean:
	rm -rf $(VENV) *.egg-info docs/_build
