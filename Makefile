# Set-up and checks. `make quickstart` and `make test` create or refresh .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.semrec-installed

export HF_HUB_OFFLINE := 1

.PHONY: install quickstart test lint clean

# (Re)install when the package metadata or the pins change. torch is pinned by constraints.txt
# so this machine installs the local CPU wheel, never a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/semrec quickstart

lint: $(STAMP)
	$(BIN)/ruff check semrec tests

test: $(STAMP)
	$(BIN)/ruff check semrec tests
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
