# make train   set up .venv, then run the default recipe (RECIPE=... for another, ARGS="--flag value" to override)
# make test    set up .venv, then run the whole test suite (CI runs exactly this)
# make demo    train the Fashion-MNIST recipe offline on Debian's dataset-fashion-mnist files
# make lint    ruff check + format check
# make gpu-check  every GPU measurement for BENCHMARKS.md, offline, within 8 minutes on one GPU (ARGS="--smoke": CPU)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RECIPE ?= recipes/cifar10/resnet50.yaml
DEMO_RECIPE ?= recipes/fashion_mnist/resnet18.yaml
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
ARGS ?=

.PHONY: setup train test demo lint format clean gpu-check

# Re-installs whenever pyproject.toml changes (or the venv is missing).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# One process, which is all a CPU or one GPU needs: a user error is then one line and exit status 2, with no
# launcher defaults block or traceback around it. For several GPUs, `accelerate launch` as in README.md.
train: setup
	@$(BIN)/python recipes/train.py --config $(RECIPE) $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

demo: setup
	@test -d $(FASHION_MNIST) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's dataset-fashion-mnist"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST not found at $(FASHION_MNIST). Install it with 'sudo apt-get install dataset-fashion-mnist'"; \
	    echo "(Debian/Ubuntu), or download the four IDX .gz files and run: make demo FASHION_MNIST=/path/to/folder"; \
	    exit 1; \
	  fi; }
	@$(BIN)/python recipes/train.py --config $(DEMO_RECIPE) --dataset_name $(FASHION_MNIST) $(ARGS)

gpu-check: setup
	$(BIN)/python recipes/gpu_check.py $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
