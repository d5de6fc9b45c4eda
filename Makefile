# Two commands do all the set-up on a fresh machine:
#   make report   create .venv, install, render the HTML report on the embedded default
#   make test     create .venv, install, run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
REPORT ?= reports
PYTEST_ARGS ?=
# pytest-xdist workers (auto: one per core); WORKERS=0 runs the suite in this process
WORKERS ?= auto

.PHONY: report test test-slow benchmarks clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 >/dev/null
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/signgd-lab report --out $(REPORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/parity.py
	$(BIN)/python benchmarks/simulate.py

clean-venv:
	rm -rf $(VENV)
