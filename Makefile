# One entry point for every workflow. `make serve` and `make test` install what they need first, from the lock files
# (requirements/*.txt: every package pinned with its hashes; `make lock` rewrites them from pyproject.toml).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# What the service needs to run (`make serve`), then the dev set on top of it (everything else).
RUNTIME_STAMP := $(VENV)/.installed-runtime
TRAIN_STAMP := $(VENV)/.installed-train
STAMP  := $(VENV)/.installed
MNIST_DIR ?=
EPOCHS_FLAG :=
# The lock's target: every platform at once (`--universal`: Linux x86_64 with the CUDA wheels, Linux aarch64, macOS,
# each pin carrying the markers where it applies) for Python >= 3.11, whatever machine runs `make lock`.
# tests/deploy/test_lock.py resolves each lock for each platform without downloading.
LOCK   := $(VENV)/bin/uv pip compile pyproject.toml --quiet --universal --generate-hashes --native-tls \
          --python-version 3.11 --custom-compile-command 'make lock'

.PHONY: install install-train serve test test-fast train train-quick bench bench-smoke soak soak-smoke lint-deploy image-check lock clean screenshot quality

install: $(STAMP)

$(RUNTIME_STAMP): requirements/runtime.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/runtime.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(RUNTIME_STAMP)

# Training's set on top of the runtime one (pyro, tqdm, matplotlib): `make serve` then `make install-train`.
install-train: $(TRAIN_STAMP)

$(TRAIN_STAMP): $(RUNTIME_STAMP) requirements/train.txt
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/train.txt
	touch $(TRAIN_STAMP)

$(STAMP): $(RUNTIME_STAMP) requirements/dev.txt client/pyproject.toml
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -e ./client
	touch $(STAMP)

# Rewrites requirements/{dev,runtime,train}.txt from pyproject.toml, keeping every pin that still fits (a new
# dependency adds its own tree and moves nothing else); `make lock UPGRADE=--upgrade` moves all to the newest allowed.
# dev is solved first; runtime and train are held to its versions, so the tests run on what the image ships.
UPGRADE :=
lock: $(STAMP)
	$(LOCK) $(UPGRADE) --extra dev -o requirements/dev.txt
	$(LOCK) $(UPGRADE) -c requirements/dev.txt -o requirements/runtime.txt
	$(LOCK) $(UPGRADE) --extra train -c requirements/dev.txt -o requirements/train.txt

serve: $(RUNTIME_STAMP)
	$(PY) -m service

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m 'not slow'

# Refit the four committed defaults (each becomes the next free version under artifacts/).
train: $(TRAIN_STAMP)
	$(PY) -m training fit --kind ppca --name pca --latent-dim 2 $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))
	$(PY) -m training fit --kind ae   --name ae  --latent-dim 2 $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))
	$(PY) -m training fit --kind vae  --name vae --latent-dim 2 $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))
	$(PY) -m training fit --kind cvae --name cvae --latent-dim 2 --epochs 15 --hidden 256 128 --batch-size 256 \
	  --lr 3e-3 --num-threads 1 $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))

# Small versions of the three models, to see the loop end to end (docs/artifacts.md, "A quick run"): into a scratch
# folder, so the committed artifacts stay as they are; `LATENTSERVE_ARTIFACTS_DIR=build/quick-artifacts make serve`
# serves them. MNIST from MNIST_DIR (downloaded by torchvision without it).
QUICK_DIR ?= build/quick-artifacts
QUICK := --artifacts-dir $(QUICK_DIR) --latent-dim 2 $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))
QUICK_NET := --hidden 128 --epochs 2 --batch-size 256 --lr 4e-3
train-quick: $(TRAIN_STAMP)
	$(PY) -m training fit --kind ppca --name pca $(QUICK)
	$(PY) -m training fit --kind ae   --name ae  $(QUICK) $(QUICK_NET)
	$(PY) -m training fit --kind vae  --name vae $(QUICK) $(QUICK_NET) --iwae-samples 64 --iwae-images 256

# docs/img/explorer.png: the explorer page over the committed artifacts, in headless Chromium (apt: chromium
# chromium-driver).
screenshot: $(STAMP)
	$(PY) -m tests.browser.screenshot docs/img/explorer.png

# The container and Kubernetes checks alone (hadolint, Compose schema, Kubernetes schemas).
lint-deploy: $(STAMP)
	$(PY) -m pytest -q tests/deploy

# Builds the image with docker (podman where there is none), runs it and the Compose stack on 127.0.0.1 and checks
# them from outside (docs/deploy.md, "The image check"). Needs the engine, ~20 GB of disk and MNIST_DIR for `train`.
image-check: $(STAMP)
	$(PY) -m deploy.image_check

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Benchmark, soak and overload (bench/, docs/bench.md). Each starts its own pinned uvicorn process; wrk is needed.
.PHONY: overload outliers
bench: $(STAMP)
	$(PY) -m bench
	$(PY) -m bench.mixed --benchmarks-md BENCHMARKS.md
	$(PY) -m bench.score --benchmarks-md BENCHMARKS.md

# Sample quality (bench/quality.py): a classifier trained here judges every model's draws of each digit and from the
# prior; prints the Markdown tables of BENCHMARKS.md and docs/quality.md. Needs MNIST_DIR.
quality: $(STAMP)
	$(PY) -m bench.quality $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))

bench-smoke: $(STAMP)
	$(PY) -m bench --smoke

soak: $(STAMP)
	$(PY) -m bench.soak --benchmarks-md BENCHMARKS.md

soak-smoke: $(STAMP)
	$(PY) -m bench.soak --duration 30 --warmup 3

overload: $(STAMP)
	$(PY) -m bench.overload --benchmarks-md BENCHMARKS.md

# The outlier benchmark of `/score` (docs/score.md): AUROC per synthetic outlier family and the flag rate, in process.
outliers: $(STAMP)
	$(PY) -m bench.outliers --benchmarks-md BENCHMARKS.md $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))
