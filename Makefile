# omeframe developer entry points. Every target creates the venv it needs when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP_TEST  := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench

# Python versions that `make test-all` (and CI) run the suite on, one venv each.
VERSIONS := 3.11 3.12 3.13

.PHONY: demo lint test test-all venvs bench schemas clean

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

# Static checks: ruff (style, bugbear, pyupgrade, import order) and mypy (types), both
# configured in pyproject.toml and pinned in the test extra. `test` and `test-all` run it first.
lint: $(STAMP_TEST)
	$(PY) -m ruff check python tests benchmarks
	$(PY) -m mypy python/omeframe

# OMEFRAME_REQUIRE_EXTRAS: an optional package the test extra declares for this Python
# but that cannot be imported fails its tests instead of skipping them (tests/conftest.py).
test: lint
	OMEFRAME_REQUIRE_EXTRAS=1 $(PY) -m pytest -q

# ---- every supported Python -------------------------------------------------
# The interpreter for version $* : `python$*` on PATH if it runs (a pyenv shim
# for a version that is not selected is on PATH but refuses to run), else the
# newest ~/.pyenv/versions/$*.*/bin/python$*.
define find_python
py=""; \
for c in "$$(command -v python$*)" $$(ls -d $$HOME/.pyenv/versions/$*.*/bin/python$* 2>/dev/null | sort -rV); do \
  if [ -n "$$c" ] && "$$c" -c 'import sys; assert sys.version_info[:2] == tuple(map(int, "$*".split(".")))' >/dev/null 2>&1; then \
    py="$$c"; break; \
  fi; \
done; \
if [ -z "$$py" ]; then \
  echo "make: no Python $* found (looked for python$* on PATH and ~/.pyenv/versions/$*.*/bin/python$*); install it, e.g. 'pyenv install $*'" >&2; \
  exit 1; \
fi
endef

# Keep each version's venv and stamp (make would delete them as intermediate files).
.PRECIOUS: .venv-%/bin/python .venv-%/.installed-test

.venv-%/bin/python:
	@$(find_python); echo "creating .venv-$* with $$py"; "$$py" -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip

.venv-%/.installed-test: pyproject.toml | .venv-%/bin/python
	.venv-$*/bin/python -m pip install --quiet -e ".[test]"
	@touch $@

# Every version's venv; `make -j4 venvs` builds them side by side (pip spends most of
# its time waiting on downloads and unpacking, so the builds overlap well even on 2 cores).
venvs: $(STAMP_TEST) $(foreach v,$(VERSIONS),.venv-$(v)/.installed-test)

# Runs the suite on each version in turn (all of them, even after a failure),
# prints the time each took, and fails if any version failed (pytest's exit 5, no
# tests collected, counts as a failure too). The slow tests (OMEFRAME_SLOW=1: the
# 32k x 32k TIFF ingest, the kill-at-every-step and byte-flip sweeps) run on the first
# version only: they test storage behaviour, not the interpreter, and would cost CI
# several minutes per version. Lint runs once, first, with the default
# venv's tools (the checks do not depend on the interpreter: mypy targets python_version).
test-all: lint $(foreach v,$(VERSIONS),.venv-$(v)/.installed-test)
	@failed=""; summary=""; \
	for v in $(VERSIONS); do \
	  echo "=== Python $$v"; t0=$$(date +%s); \
	  slow=0; [ "$$v" = "$(firstword $(VERSIONS))" ] && slow=1; \
	  OMEFRAME_REQUIRE_EXTRAS=1 OMEFRAME_SLOW=$$slow .venv-$$v/bin/python -m pytest -q -p no:cacheprovider || failed="$$failed $$v"; \
	  summary="$$summary Python $$v: $$(( $$(date +%s) - t0 )) s;"; \
	done; \
	echo "=== test-all:$$summary"; \
	if [ -n "$$failed" ]; then echo "=== test-all: FAILED on Python$$failed"; exit 1; fi

bench: $(STAMP_BENCH)
	$(PY) benchmarks/run_all.py

schemas: $(STAMP_TEST)
	$(PY) -m omeframe.formats.schemas schemas

clean:
	rm -rf $(VENV) $(foreach v,$(VERSIONS),.venv-$(v)) demo-output bench-output .pytest_cache .hypothesis .mypy_cache .ruff_cache
