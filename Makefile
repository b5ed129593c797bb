# Two commands do all the set-up on a fresh machine:
#   make demo   train demorl_sac through RL Zoo on Pendulum-v1 (short budget, progress bar)
#   make test   ruff + mypy + pytest
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 first: a local CPU wheel on our machines; any torch >= 2.3 works elsewhere.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[tests,benchmarks]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m rl_zoo3.train --algo demorl_sac --env Pendulum-v1 -n 3000 --eval-freq 1000 --eval-episodes 3 \
		--progress --seed 0 --num-threads 1 -f logs/demo

test: $(STAMP)
	$(PY) -m ruff check sb3_demo tests benchmarks examples
	$(PY) -m ruff format --check sb3_demo tests benchmarks examples
	$(PY) -m mypy sb3_demo
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/planner_latency.py

clean:
	rm -rf $(VENV) logs .pytest_cache .mypy_cache .ruff_cache
