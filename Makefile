# The two commands of README.md: `make demo` (the main job on built-in defaults) and `make test`.
# Each creates .venv when absent and installs what it needs: torch first, then the project with its extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1

BENCH := .venv-bench
PEERS := .venv-peers

.PHONY: demo test test-slow lint setup bench-setup bench-throughput bench-accuracy peers-setup

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[train,dev,cluster]"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python -m ordnance.training.demo

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m slow tests/cluster tests/training/test_ddp.py

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m slow

lint: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks (experiments/README.md). SAHI lives in its own torch-free venv (see the bench extra).
$(BENCH)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH)
	$(BENCH)/bin/pip install --quiet --upgrade pip
	$(BENCH)/bin/pip install --quiet -e ".[bench]"
	touch $@

bench-setup: $(VENV)/.installed $(BENCH)/.installed

bench-throughput: bench-setup
	$(BIN)/python experiments/throughput/run.py

bench-accuracy: $(VENV)/.installed
	$(BIN)/python experiments/accuracy/run.py

# The peer system a user would pick instead (experiments/peers): Ultralytics YOLO11 and SAHI, in their own venv,
# never a dependency of the package (both pull opencv-python, which shares cv2 with the train extra's headless build).
$(PEERS)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet --upgrade pip
	$(PEERS)/bin/pip install --quiet $(TORCH)
	$(PEERS)/bin/pip install --quiet ultralytics sahi psutil onnx onnxslim -e .
	touch $@

peers-setup: $(PEERS)/.installed
