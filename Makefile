# make train   set up .venv, then run the default recipe (RECIPE=... for another, ARGS="--flag value" to override)
# make test    set up .venv from the lock, then run the whole test suite (CI runs exactly this; ARGS='-m "not slow"': unit tests)
# make lock    refresh requirements/lock.txt to the newest releases (then: make test)
# make test-floors  the unit tests on the lowest versions pyproject.toml allows (requirements/floors.txt)
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

.PHONY: setup train test test-floors lock demo lint format clean gpu-check

LOCK := requirements/lock.txt
FLOORS := requirements/floors.txt
READER_PINS := $(wildcard requirements/readers/*.txt)
READERS := $(patsubst requirements/readers/%.txt,$(VENV)/readers/%/.installed,$(READER_PINS))

# The exact versions of the lock, re-installed whenever pyproject.toml or the lock changes (or the venv is missing):
# a fresh clone tests what the last merged commit tested.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[dev]"
	touch $@

# Other transformers / timm versions that read exported model folders (tests/models/test_reader_versions.py):
# each set of pins in a folder of its own, put ahead of the venv on the path by the test.
$(VENV)/readers/%/.installed: requirements/readers/%.txt $(VENV)/.installed
	rm -rf $(@D)
	$(BIN)/python -m pip install --quiet --no-deps --target $(@D) -r $<
	touch $@

setup: $(VENV)/.installed $(READERS)

# Refresh the lock to the newest releases pyproject.toml allows; then `make test` installs and tests them.
lock:
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-lock/bin/python -m pip install --quiet -e ".[dev]"
	{ sed -n '/^#/p' $(LOCK); $(VENV)-lock/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(VENV)-lock

# The lowest versions pyproject.toml allows (requirements/floors.txt), in a venv of their own: the unit tests.
test-floors:
	test -x $(VENV)-floors/bin/python || $(PYTHON) -m venv $(VENV)-floors
	$(VENV)-floors/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-floors/bin/python -m pip install --quiet -c $(FLOORS) -e ".[test]"
	$(VENV)-floors/bin/python -m pytest -m "not slow" $(ARGS)

# One process, which is all a CPU or one GPU needs: a user error is then one line and exit status 2, with no
# launcher defaults block or traceback around it. For several GPUs, `accelerate launch` as in README.md.
train: setup
	@$(BIN)/python recipes/train.py --config $(RECIPE) $(ARGS)

test: setup
	$(BIN)/python -m pytest --durations=25 $(ARGS)

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
	rm -rf $(VENV) $(VENV)-floors $(VENV)-lock runs .pytest_cache .ruff_cache
