# Entry points: `make demo` (the main job on the bundled sample data), `make test` and `make lint` (ruff).
# Each builds its own virtual environment with the pinned CPU PyTorch first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
DEMO_OUT ?= demo_output

.PHONY: demo test lint env clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $@

demo: env
	$(PY) -m ExtremeSegLib.cli demo --out $(DEMO_OUT)

test: env
	$(PY) -m pytest -q Testing

lint: env
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
