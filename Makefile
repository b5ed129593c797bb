# Two commands do all the set-up on a fresh machine:
#   make demo   DeMoSAC (learned model) and SAC through RL Zoo on Pendulum-v1, same seed, then a summary and a PNG
#   make test   ruff + mypy + pytest
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 first: a local CPU wheel on our machines; any torch >= 2.3 works elsewhere.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo demo-analytic test lint typecheck pytest bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[tests,benchmarks]"
	touch $(STAMP)

# both trainings at once (one core each), then one line per algorithm and logs/demo/demo_Pendulum-v1.png
demo: $(STAMP)
	$(PY) -m sb3_demo.demo

# DeMoSAC with the exact analytic Pendulum model instead of a learned one (RL Zoo, about a minute)
demo-analytic: $(STAMP)
	$(PY) -m rl_zoo3.train --algo demorl_sac --env Pendulum-v1 -n 3000 --eval-freq 1000 --eval-episodes 3 \
		--progress --seed 0 --num-threads 1 -f logs/demo-analytic \
		-params model:"'analytic'" model_kwargs:None model_fit_kwargs:None learning_starts:500 \
		planner_kwargs:"dict(horizon=5, num_samples=64, num_particles=1, num_iterations=2, temperature=1.0)"

test: $(STAMP)
	$(PY) -m ruff check sb3_demo tests benchmarks examples docs
	$(PY) -m ruff format --check sb3_demo tests benchmarks examples docs
	$(PY) -m mypy sb3_demo
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/planner_latency.py

clean:
	rm -rf $(VENV) logs .pytest_cache .mypy_cache .ruff_cache
