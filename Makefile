# facecls: `make demo` and `make test` work on a fresh machine with only Python 3.10+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-kernels install dev lint format clean browser dist docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files make re-runs cheap; they are rebuilt when pyproject.toml changes.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/facecls demo

lint: dev
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

format: dev
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Debian's chromium for the browser tests (the report, the service's page, the People page; about
# 20 s to install). Those tests fail without it, so this stops here, saying why, when it cannot
# install it (no apt-get, no root or sudo, no mirror); $CHROMIUM names another binary.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
browser:
	@if [ -n "$$CHROMIUM" ] || command -v chromium >/dev/null 2>&1 \
		|| command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "make: Chromium is missing and there is no apt-get: install Chromium or set CHROMIUM=/path" >&2; \
		exit 1; \
	fi; \
	echo "Installing Debian's chromium for the browser tests"; \
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install \
		-y -qq --no-install-recommends chromium >/dev/null \
		|| { echo "make: could not install Debian's chromium (the browser tests need it)" >&2; exit 1; }; \
	command -v chromium >/dev/null 2>&1 \
		|| { echo "make: chromium installed but not on PATH" >&2; exit 1; }

test: lint browser
	$(BIN)/python -m pytest -q

# The suite must not depend on one CPU's kernels: run it with ATen's portable kernels and its
# AVX2 ones (ATEN_CPU_CAPABILITY), then with 1 and 2 PyTorch threads (FACECLS_TEST_THREADS,
# read by tests/conftest.py). Four whole runs: about four times `make test`.
test-kernels: lint browser
	@for isa in default avx2; do \
		echo "== ATEN_CPU_CAPABILITY=$$isa"; \
		ATEN_CPU_CAPABILITY=$$isa $(BIN)/python -m pytest -q || exit 1; \
	done
	@for threads in 1 2; do \
		echo "== FACECLS_TEST_THREADS=$$threads"; \
		FACECLS_TEST_THREADS=$$threads $(BIN)/python -m pytest -q || exit 1; \
	done

# The documentation site with the API reference, served on http://127.0.0.1:8000 (tests/test_docs.py
# builds it with --strict in `make test`).
docs: dev
	$(BIN)/mkdocs serve

# The sdist and the wheel (pipx install dist/facecls-*.whl; docs/install.md).
dist: dev
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
