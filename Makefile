# Two commands on a fresh machine: `make demo` (set up, then tune on bundled data) and
# `make test` (set up, then lint and run the tests). torch==2.13.0 is installed first: it is
# the CPU build on this machine's disk; any other torch request pulls a CUDA build of several GB.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/caviar tune src/caviar/datasets/wage.csv.gz --target wage --drop logwage \
		--time-budget 60 --out runs/demo

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/throughput.py --population 64 --hidden 128 --epochs 10
