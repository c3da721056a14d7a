# Two commands set everything up on a fresh machine: `make sweep` and `make test`.
# Both create .venv when missing and (re)install only when pyproject.toml or
# constraints.txt changed, so they are quick when already set up.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.exportsweep-installed
OUT    ?= results
PYTEST_ARGS ?=
# A second environment for the torch-version matrix (docs/matrix.md): torch 2.13.0 (a CPU
# build pip takes from this machine's disk), the same Ray and this exportsweep, no torchvision
# (PyPI's does not import beside that torch).
VENV_OLD  := .venv-torch213
STAMP_OLD := $(VENV_OLD)/.exportsweep-installed

.PHONY: setup env-torch213 sweep test test-all test-props test-chaos browser lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

## The torch 2.13.0 environment the matrix tests compare with (created once, then reused).
env-torch213: $(STAMP_OLD)

$(STAMP_OLD): pyproject.toml constraints.txt
	@test -x $(VENV_OLD)/bin/python || $(PYTHON) -m venv $(VENV_OLD)
	grep -vE '^(torch|torchvision|triton|nvidia-[a-z0-9-]+)==' constraints.txt > $(VENV_OLD)/constraints.txt
	$(VENV_OLD)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c $(VENV_OLD)/constraints.txt torch==2.13.0 -e '.[transformers]'
	@touch $(STAMP_OLD)

## Run the smoke manifest (about 15 real models, both modes) and print where the results are.
sweep: $(STAMP)
	$(BIN)/exportsweep run manifests/smoke.yaml --out $(OUT)

## Headless Chromium for the report's browser tests (Debian's package; the machine runs as root).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## The default test suite (slow tests skipped; see test-all).
test: $(STAMP) $(STAMP_OLD) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Every test, the slow ones included.
test-all: $(STAMP) $(STAMP_OLD) browser
	$(BIN)/python -m pytest -m '' $(PYTEST_ARGS)

## The property tests with the long hypothesis profile: 20x the examples, a fresh seed each run.
test-props: $(STAMP)
	EXPORTSWEEP_HYPOTHESIS=long $(BIN)/python -m pytest -m property $(PYTEST_ARGS)

## The chaos test: rounds of a sweep on local Ray with workers, the driver and compactions
## killed at random (minutes). EXPORTSWEEP_CHAOS_SEED=N replays a printed seed.
test-chaos: $(STAMP)
	$(BIN)/python -m pytest -m slow -s tests/test_chaos.py $(PYTEST_ARGS)

## Re-pin constraints.txt from the current environment.
lock: $(STAMP)
	{ head -n 2 constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^exportsweep'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(VENV_OLD) $(OUT) .pytest_cache
