# Cormorant for training and GPU search (CUDA 12). Build from the repository root:
#   docker build -f docker/train.Dockerfile -t cormorant-train .
#   docker run --rm --gpus all -v cormorant-indexes:/indexes -v $PWD/data:/data cormorant-train \
#       index build --dataset /data/scifact --pipeline dense --out /indexes/scifact-dense
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    CORMORANT_CACHE=/var/cache/cormorant

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The default torch wheel on Linux is the CUDA build, which is what this image wants.
RUN pip3 install "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY src ./src
# FAISS with GPU kernels replaces faiss-cpu: FaissIndex moves indexes to the GPU when it sees one.
RUN pip3 install ".[service]" \
    && pip3 uninstall -y faiss-cpu \
    && pip3 install faiss-gpu-cu12
VOLUME ["/indexes", "/var/cache/cormorant"]
ENTRYPOINT ["cormorant"]
CMD ["--help"]
