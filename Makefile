# make run   — build .venv if needed, make sure Fashion-MNIST is there, train the default VAE
# make test  — build .venv if needed, run the test suite
# make lint  — ruff
# make bench — CPU speed against a hand-written PyTorch VAE, and how cost scales
# make gpu-check — on a CUDA machine: CUDA tests, GPU benchmarks, a torchrun run (< 8 min)
# make notebooks — re-run every notebook in full mode, in place (their committed outputs)
# make docs  — build the documentation site into docs/_build/html (warnings are errors)
# make docs-screenshots — headless Chromium screenshots of a guide page and an API page

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist
RUN_ARGS ?= --epochs 30

.PHONY: run test lint bench gpu-check data graphviz notebooks install docs docs-screenshots

install: $(STAMP)

# torch and torchvision must be a matching pair: constraints.txt pins the pair we test.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package when nothing else provides it (needs root, or sudo).
data:
	@if [ -n "$$PYROVAE_DATA" ] || [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get install -y dataset-fashion-mnist || \
		  (apt-get update && apt-get install -y dataset-fashion-mnist); \
	else \
		echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'," \
		     "or set PYROVAE_DATA to a folder with the IDX files"; exit 2; \
	fi

# Graphviz's `dot` draws the notebooks' models (pyro.render_model); Debian's package when root.
graphviz:
	@if command -v dot >/dev/null; then \
		true; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get install -y graphviz || (apt-get update && apt-get install -y graphviz); \
	else \
		echo "warning: Graphviz's dot is missing (run 'sudo apt-get install graphviz');" \
		     "notebooks that draw a model will fail"; \
	fi

run: $(STAMP) data
	$(BIN)/pyrovae train $(RUN_ARGS)

# One thread per test process unless told otherwise: the suite's many tiny models run about
# twice as fast without thread hand-offs (here: 2 min with one thread, 3.5–4 min with two,
# both measured beside a running benchmark).
test: $(STAMP) graphviz
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

# The site, from scratch (-E: every page re-read, so every warning shows), offline: MathJax is
# copied into the site, the notebooks are rendered with their committed outputs (not re-run).
# Open docs/_build/html/index.html. About 25 s on 2 cores.
docs: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

# What a reader sees, as PNGs in docs/_build/screenshots (needs Debian's chromium; as root it
# is installed).
docs-screenshots: docs
	$(BIN)/python docs/screenshots.py docs/_build/html docs/_build/screenshots

# Full runs, several minutes each on 2 cores; `make notebooks NOTEBOOKS=01_…ipynb` for one.
notebooks: $(STAMP) graphviz
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python notebooks/execute.py $(NOTEBOOKS)

# A few minutes on 2 cores: epochs against the hand-written reference, the scaling tables,
# and the log p(x) evaluator (K = 5000) on 200 test images.
bench: $(STAMP) data
	$(BIN)/python benchmarks/epoch_time.py --json benchmarks/results/epoch_time_cpu.json
	$(BIN)/python benchmarks/scaling.py --json benchmarks/results/scaling_cpu.json
	$(BIN)/python benchmarks/evaluator.py --images 200 --json benchmarks/results/evaluator_cpu.json

# One script, under 8 minutes on one GPU: the CUDA-marked tests, the epoch-time benchmark on
# CUDA (ratio to the reference), IWAE K = 1, 5, 50, log p(x) with K = 5000 on the 10 000 test
# images, a 1-GPU torchrun run. Without a GPU it stops with one line (exit 2). Where the
# environment is installed already: python benchmarks/gpu_check.py
gpu-check: $(STAMP) data
	$(BIN)/python benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json
