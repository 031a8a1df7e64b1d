# omeframe developer entry points. Every target creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP_TEST  := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: demo test bench schemas clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Installs the package (editable) with the extras the test suite exercises.
$(STAMP_TEST): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

$(STAMP_BENCH): pyproject.toml $(STAMP_TEST)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	@touch $@

demo: $(STAMP_TEST)
	$(PY) -m omeframe demo --out demo-output

test: $(STAMP_TEST)
	$(PY) -m pytest -q

bench: $(STAMP_BENCH)
	$(PY) benchmarks/run_all.py

schemas: $(STAMP_TEST)
	$(PY) -m omeframe.formats.schemas schemas

clean:
	rm -rf $(VENV) demo-output bench-output .pytest_cache .hypothesis
