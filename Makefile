# The two commands of README.md: `make demo` (the main job on built-in defaults) and `make test`.
# Each creates .venv when absent and installs what it needs: torch first, then the project with its extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-slow lint setup

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[train,dev]"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python -m ordnance.training.demo

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m slow

lint: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
