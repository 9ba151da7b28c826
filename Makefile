# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint format bench docs clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "mailworker needs Python 3.11 or newer (PYTHON=$(PYTHON))"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev,docs]'
	@touch $(INSTALLED)

demo: $(INSTALLED)
	$(VENV)/bin/mailworker demo

test: $(INSTALLED)
	$(PY) -m pytest

# mypy reads the package as installed: the repository's folders linked under one name.
PARTS := settings store observe delivery feedback tasks worker cli dev

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@rm -rf .typecheck && mkdir -p .typecheck/mailworker
	@for file in mailworker/*.py; do ln -s ../../$$file .typecheck/mailworker/; done
	@for part in $(PARTS); do ln -s ../../$$part .typecheck/mailworker/$$part; done
	$(PY) -m mypy
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(INSTALLED)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench

docs: $(INSTALLED)
	$(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .typecheck *.egg-info
