# syntax=docker/dockerfile:1.7
#
# One image for both halves of AutoLRS: the operator (the default command) and the trainer
# that the operator's worker pods run (`autolrs run ...` or `torchrun ...`).
#
#   CPU (default):  docker build -t autolrs-operator:0.1.0 .
#   GPU nodes:      docker build -t autolrs-operator:0.1.0-cuda \
#                     --build-arg BASE_IMAGE=pytorch/pytorch:<torch>-cuda<X.Y>-cudnn9-runtime .
#
# With a PyTorch base image its CUDA build of torch is kept; on the slim Python base the
# CPU build of torch==${TORCH_VERSION} is installed. docs/deploy.md has the details.

# Exact patch version: rebuilds get the same interpreter. Pin a digest
# (python:3.11.13-slim-bookworm@sha256:...) for byte-identical bases.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# Base of the final image: the slim Python image (CPU), or a CUDA PyTorch image.
ARG BASE_IMAGE=${PYTHON_IMAGE}

# --- build: the project's wheel (pure Python), built with pip's isolated setuptools ------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trainer ./trainer
COPY operator ./operator
RUN pip install --no-cache-dir --disable-pip-version-check --upgrade pip \
 && pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

# --- runtime: interpreter, torch, the wheel and its pinned dependencies; no compilers -----
FROM ${BASE_IMAGE} AS runtime
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=build /wheels /tmp/wheels
COPY constraints.txt /tmp/constraints.txt
# A base that already has torch (CUDA PyTorch images) keeps it, so its pin is dropped;
# otherwise the CPU build of the pinned torch comes first.
RUN set -eu; \
    if python -c "import torch" 2>/dev/null; then \
      grep -v '^torch==' /tmp/constraints.txt > /tmp/runtime-constraints.txt; \
    else \
      pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"; \
      cp /tmp/constraints.txt /tmp/runtime-constraints.txt; \
    fi; \
    wheel="$(ls /tmp/wheels/autolrs_operator-*.whl)"; \
    pip install -c /tmp/runtime-constraints.txt "${wheel}[operator]"; \
    rm -rf /tmp/wheels /tmp/constraints.txt /tmp/runtime-constraints.txt; \
    python -c "import autolrs, autolrs_operator, kopf, torch"

# Healthcheck of the operator: probes the --liveness URL that `kopf run` was started with
# (kopf's /healthz). A container running the trainer, or kopf without --liveness, has
# nothing to probe and counts as healthy. Usage: autolrs-healthcheck [PID] (default 1).
COPY --chmod=0755 <<'EOF' /usr/local/bin/autolrs-healthcheck
#!/usr/bin/env python3
"""Exit 0 when the operator's kopf liveness endpoint answers 200, 1 otherwise."""
import sys
import urllib.request

pid = sys.argv[1] if len(sys.argv) > 1 else "1"
with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
    args = [arg.decode() for arg in cmdline.read().split(b"\0") if arg]
if not any(arg.rsplit("/", 1)[-1] == "kopf" for arg in args):
    sys.exit(0)
urls = [arg.split("=", 1)[1] for arg in args if arg.startswith("--liveness=")]
urls += [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--liveness", "-L")]
if not urls:
    sys.exit(0)
url = urls[-1].replace("://0.0.0.0:", "://127.0.0.1:").replace("://:", "://127.0.0.1:")
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as error:
    print(f"autolrs-healthcheck: {url}: {error}", file=sys.stderr)
    sys.exit(1)
EOF

RUN groupadd --system --gid 10001 autolrs \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin autolrs
WORKDIR /app
COPY --chown=10001:10001 examples ./examples
USER 10001:10001

# 8080: kopf liveness (/healthz); 9100: operator metrics (the operator's own default, 8080,
# would clash with the liveness port). Trainer pods serve their metrics on
# AUTOLRS_METRICS_PORT, set by the operator.
ENV AUTOLRS_OPERATOR_METRICS_PORT=9100
EXPOSE 8080 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["autolrs-healthcheck"]
CMD ["kopf", "run", "--standalone", "--all-namespaces", "-m", "autolrs_operator", "--liveness=http://0.0.0.0:8080/healthz"]
