# Two entry points on a fresh machine: `make demo` and `make test`.
# torch is pinned first so pip never pulls the CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test install install-test clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.created pyproject.toml
	$(PIP) -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/lra demo

test: install-test
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
