# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PRESET ?= quick
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test bench lint docs fashion-mnist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[export,examples]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# Debian's dataset-fashion-mnist, when running as root on Debian or Ubuntu.
# Elsewhere the loader falls back to the Keras cache, then to a download.
fashion-mnist:
	@if [ ! -f $(FASHION_MNIST)/t10k-labels-idx1-ubyte.gz ] && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null; then \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
	  || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
	  || echo "Could not install dataset-fashion-mnist; the loader tries the Keras cache, then a download."; \
	fi

# The MobileNetV2 Fashion-MNIST case study; `make demo PRESET=full` for the full run.
demo: $(VENV)/.installed-demo fashion-mnist
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python examples/mobilenetv2_fashion_mnist.py --preset $(PRESET)

# The whole suite on TensorFlow, then the tests marked `backends` (and `jax`
# or `torch`) on JAX and on PyTorch: tests/conftest.py deselects the others.
test: $(VENV)/.installed-dev fashion-mnist
	$(BIN)/ruff check .
	KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -n 2 -q
	KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -n 2 -q
	KERAS_BACKEND=torch TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -n 2 -q

# Benchmarks against TFMOT and dense training (benchmarks/run.py): the full run
# writes benchmarks/results/latest.*; `make bench QUICK=1` (about 10 minutes on
# 2 cores) writes benchmarks/results/quick.*.
bench: $(VENV)/.installed-dev fashion-mnist
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python benchmarks/run.py $(if $(QUICK),--quick)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache .ruff_cache
