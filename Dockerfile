# soraflow image. CPU by default; for CUDA pass a CUDA runtime base:
#   docker build -t soraflow .
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 -t soraflow:cuda .
# The CUDA base must provide python3.11 (or install it first); torch==2.14.1 from PyPI is a
# CUDA build and uses the GPU when one is visible (`docker run --gpus all ...`).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

RUN apt-get update \
    && apt-get install -y --no-install-recommends git make g++ libgl1 libglib2.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . /app
# DVC needs a git repository to run the pipeline.
RUN git init -q 2>/dev/null || true \
    && make install PYTHON=python3.11

# `make demo` runs the whole `dvc repro` pipeline on the embedded demo corpus;
# the MLflow UI: docker run -p 5000:5000 soraflow make ui (binds 127.0.0.1 inside; use
# `.venv/bin/mlflow ui --host 0.0.0.0` to expose it from a container).
CMD ["make", "demo"]
