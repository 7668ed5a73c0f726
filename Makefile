# `make demo` and `make test` set up .venv (pip install -e .[dev]) and build the extensions once.
# `make test` = `make lint` (ruff lint + format check, import-linter layer contracts) + pytest.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.studio-installed
PYTHON ?= python3

.PHONY: demo demo-splat test lint setup extensions clean-ext

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	$(PY) -m studio.ext
	touch $(STAMP)

extensions: $(STAMP)
	$(PY) -m studio.ext

demo: $(STAMP)
	bash scripts/demo.sh

demo-splat: $(STAMP)
	bash scripts/demo_splat.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/check_imports.py

test: lint
	$(PY) -m pytest -q

clean-ext:
	rm -rf $${STUDIO_EXT_DIR:-$$HOME/.cache/distill-studio/extensions}
