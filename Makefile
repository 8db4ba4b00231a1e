# One entry point for every workflow. `make serve` and `make test` install what they need first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MNIST_DIR ?=
EPOCHS_FLAG :=

.PHONY: install serve test test-fast train bench bench-smoke soak soak-smoke lint-deploy clean screenshot

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(PY) -m service

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m 'not slow'

# Refit the three committed defaults (each becomes the next free version under artifacts/).
train: $(STAMP)
	$(PY) -m training fit --kind ppca --name pca --latent-dim 2 $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))
	$(PY) -m training fit --kind ae   --name ae  --latent-dim 2 $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))
	$(PY) -m training fit --kind vae  --name vae --latent-dim 2 $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))

# docs/img/explorer.png: the explorer page over the committed artifacts, in headless Chromium (apt: chromium
# chromium-driver).
screenshot: $(STAMP)
	$(PY) -m tests.browser.screenshot docs/img/explorer.png

# The container and Kubernetes checks alone (hadolint, Compose schema, Kubernetes schemas).
lint-deploy: $(STAMP)
	$(PY) -m pytest -q tests/deploy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Benchmark, soak and overload (bench/, docs/bench.md). Each starts its own pinned uvicorn process; wrk is needed.
.PHONY: overload
bench: $(STAMP)
	$(PY) -m bench

bench-smoke: $(STAMP)
	$(PY) -m bench --smoke

soak: $(STAMP)
	$(PY) -m bench.soak --benchmarks-md BENCHMARKS.md

soak-smoke: $(STAMP)
	$(PY) -m bench.soak --duration 30 --warmup 3

overload: $(STAMP)
	$(PY) -m bench.overload --benchmarks-md BENCHMARKS.md
