# latentserve: one image for GPU and CPU hosts. The default target serves the committed artifacts/ on port 8000;
# `--target train` adds the `train` extra (Pyro) and runs `python -m training`. Why this base image: docs/deploy.md.
#
#   docker build -t latentserve .
#   docker run --gpus all -p 8000:8000 latentserve        # drop --gpus all on a host without a GPU

# The PyPI torch wheel for Linux x86_64 bundles the CUDA runtime (the nvidia-* wheels), so a plain Python base is
# enough: the host's NVIDIA driver is all the GPU path needs, and the same image runs on CPU.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Dependencies come from the lock files (requirements/*.txt, `make lock` writes them from pyproject.toml): every
# package at one version with its SHA-256, so two builds install the same bytes. They are installed before the source
# is copied, so editing code reuses the multi-GB torch layer; only a change to a lock file reinstalls them.
FROM base AS builder
WORKDIR /src
RUN python -m venv "$VIRTUAL_ENV"
COPY requirements/runtime.txt requirements/train.txt requirements/
RUN pip install --require-hashes --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY lvm/ lvm/
COPY service/ service/
COPY training/ training/
# The same install of this project as `make install`, minus editable mode; --no-deps because the lock installed every
# dependency. Then what the server never runs: pip itself and the test suites some wheels ship.
RUN pip install --no-deps . \
    && find "$VIRTUAL_ENV" -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} + \
    && pip uninstall --yes pip

# The `train` extra (Pyro, torchvision, plotting) on top of the runtime venv, from its own lock (the runtime lock plus
# the extra).
# pip is gone from this venv, so the base image's pip installs into it.
FROM builder AS train-builder
RUN /usr/local/bin/python -m pip --python "$VIRTUAL_ENV/bin/python" install --require-hashes --no-deps \
        -r requirements/train.txt

# Shared by both runnable targets: tini as PID 1 forwards SIGTERM to the server and reaps zombies; a fixed non-root
# uid so that Kubernetes' runAsNonRoot can check it and volumes can be chowned to it.
FROM base AS runtime-base
# tini is left unpinned (DL3008): Debian replaces a package revision on its mirrors when it patches one, so a pinned
# revision stops installing; the base image's Debian release fixes the version line.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app
WORKDIR /app
# Only the NVIDIA container runtime reads this; it asks for the CUDA libraries (not graphics) when a GPU is passed in.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LATENTSERVE_ARTIFACTS_DIR=/app/artifacts \
    LATENTSERVE_HOST=0.0.0.0 \
    LATENTSERVE_PORT=8000
# Owned by the app user so that a named volume seeded from here is writable by the `train` target (same uid).
COPY --chown=10001:10001 artifacts/ /app/artifacts/

FROM runtime-base AS train
COPY --from=train-builder /opt/venv /opt/venv
# Where `python -m training` looks for the four MNIST IDX files when --data-dir is not given: mount them here.
ENV MNIST_DIR=/data/mnist
USER 10001:10001
ENTRYPOINT ["tini", "--", "python", "-m", "training"]
CMD ["--help"]

# Last stage: what `docker build .` produces.
FROM runtime-base AS runtime
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
# Liveness only (the process answers); readiness is /readyz, used by Kubernetes. urllib raises on any non-2xx.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LATENTSERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "service"]
