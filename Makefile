# Two entry points: `make test` and `make demo`. Each sets up its own virtual environment.
# A torch that the Python already sees (e.g. a CUDA build) is used as it is; otherwise the pinned
# CPU build is installed first, so that pip never pulls the CUDA wheels by itself.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BIN := $(VENV)/bin

.PHONY: install test lint demo clean

$(BIN)/python:
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "using the installed torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	else \
		$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"; \
	fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/python -m ruff check src tests benchmarks tools
	$(BIN)/python tools/check_function_length.py --max 60

test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install
	$(BIN)/masam demo -o demo_output

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
