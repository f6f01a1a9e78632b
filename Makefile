# mtrl — make targets. Every target that needs the virtualenv builds it first, so on a fresh clone
# `make demo` or `make test` is the only command needed.
#
# GPU machines: install a CUDA build of torch instead of the pinned CPU one, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
RUN ?= runs/demo
ENV ?= HalfCheetahVel
DEVICE ?= auto
SEEDS ?= 0 1 2

.PHONY: install test demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/mtrl run --config configs/point_goal_arc.yaml --profile smoke --run-dir $(RUN) --workers 2 --threads 1
	$(BIN)/mtrl status $(RUN)

lint: $(STAMP)
	$(BIN)/ruff check mtrl tests benchmarks

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) runs/demo .pytest_cache .ruff_cache MUJOCO_LOG.TXT *.egg-info
