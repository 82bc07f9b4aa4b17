# Two commands on a fresh machine: `make demo` (arrives with the case-study issue) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: test lint demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,export]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check .

demo:
	@echo "make demo arrives with the MobileNetV2 Fashion-MNIST case study (issue 6)."
	@echo "Until then, run the quick start in README.md."
	@exit 1

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
