# Twofold service image. CPU by default; CUDA with --build-arg FLAVOR=cuda:
#   docker build -t twofold:cpu .
#   docker build -t twofold:cuda --build-arg FLAVOR=cuda .    # CUDA torch + faiss-gpu
# Model weights are fetched (and sha256-verified) at build time into /opt/twofold/models;
# nothing is downloaded when a container runs. Collections and trained models live on
# volumes mounted at /var/lib/twofold (see docker-compose.yml): the image never writes
# there, so an upgraded image brings its own weights and code and leaves the data alone.
ARG FLAVOR=cpu

FROM python:3.11-slim AS base
# TOKENIZERS_PARALLELISM trips the secrets check by name; it holds no secret.
# hadolint ignore=DL3064
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    TWOFOLD_HOME=/opt/twofold
WORKDIR /app
COPY pyproject.toml README.md requirements-gpu.txt ./
COPY twofold ./twofold
COPY data ./data

# CPU: torch 2.13.0 from the PyTorch CPU index (the PyPI wheel is the CUDA build).
FROM base AS deps-cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL" \
 && pip install .

# CUDA: torch 2.13.0 from PyPI (CUDA 12 wheels with their runtime libraries) and
# faiss-gpu instead of faiss-cpu (same `faiss` module: never both). The host needs the
# NVIDIA driver and container toolkit (`docker run --gpus all`).
FROM base AS deps-cuda
RUN pip install torch==2.13.0 \
 && pip install . \
 && pip uninstall -y faiss-cpu \
 && pip install -r requirements-gpu.txt

# hadolint ignore=DL3006
FROM deps-${FLAVOR} AS final
# Weights at build time (the only step with network): verified, then read-only.
RUN HF_HUB_OFFLINE=0 twofold models fetch \
 && twofold models list \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/twofold twofold \
 && mkdir -p /var/lib/twofold/collections /var/lib/twofold/models \
 && chown -R 10001:10001 /var/lib/twofold
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["twofold", "serve", "/var/lib/twofold/collections/cranfield", "--host", "0.0.0.0", "--port", "8000"]
