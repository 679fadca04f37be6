# LWD Fleet — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint bench clean help

help:
	@echo "make demo       set up if needed, then run the whole flywheel on this machine (127.0.0.1 only; DEMO_ARGS=--quick for ~5 min)"
	@echo "make test       set up if needed, then lint + the whole test suite (slow tests included)"
	@echo "make test-fast  skip tests marked slow"
	@echo "make bench      run the benchmarks and write results files"
	@echo "make setup      create $(VENV) and install everything (idempotent)"

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m lwd_learner.cli flywheel $(DEMO_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest -m "not bench" $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow and not bench" $(PYTEST_ARGS)

bench: setup
	$(PY) ros2_ws/src/lwd_sim/bench/run_bench.py
	$(PY) ros2_ws/src/lwd_fleet/bench/bench_inference.py --iters 500
	$(PY) ros2_ws/src/lwd_fleet/bench/bench_recorder.py
	$(PY) learner/bench/bench_update.py
	$(PY) learner/bench/bench_latency.py

clean:
	rm -rf $(VENV) ros2_ws/build ros2_ws/install ros2_ws/log .pytest_cache .ruff_cache var
