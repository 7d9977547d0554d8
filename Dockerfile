# syntax=docker/dockerfile:1.7
# One image for every Tandem process: the gRPC services (`tandem serve ...`), the Kafka
# ingest consumer (`tandem stream consume`), the KFP pipeline components and the schedule
# job. Build from the repository root:
#
#   docker build -t tandem:0.1.0 .                                           # CUDA-enabled torch (PyPI default)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t tandem:0.1.0-cpu .
#
# Stages: `jre` provides a Java 21 runtime for Lucene (Pyserini); `build` installs the
# project into a virtualenv; the final stage copies both onto a slim Python base with no
# compilers or build tools and runs as an unprivileged user (UID 10001, which the Helm chart's
# podSecurity values expect).

ARG PYTHON_VERSION=3.11
ARG DEBIAN=bookworm

FROM eclipse-temurin:21-jre-jammy AS jre

FROM python:${PYTHON_VERSION}-slim-${DEBIAN} AS build
# Empty = PyPI's torch (bundles CUDA libraries; uses the GPU when the pod gets one, CPU otherwise).
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip setuptools wheel
# torch first, in its own layer: it is most of the image and changes least often.
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch --index-url "$TORCH_INDEX_URL"; else pip install torch; fi
WORKDIR /src
# README.md* (a glob): pyproject names it as the long description; setuptools only warns
# when it is absent, and a glob keeps the build from failing on it.
COPY pyproject.toml README.md* ./
COPY platform ./platform
COPY services ./services
COPY pipelines ./pipelines
COPY app ./app
# A regular (non-editable) install: the final image needs no source tree.
RUN pip install . && pip check

FROM python:${PYTHON_VERSION}-slim-${DEBIAN} AS runtime
LABEL org.opencontainers.image.title="tandem" \
      org.opencontainers.image.description="Hybrid product search: BM25 (Lucene) + generative retrieval, gRPC services and KFP components" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp1: OpenMP runtime that LightGBM's wheel links against (torch bundles its own).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tandem \
 && useradd --system --uid 10001 --gid tandem --home-dir /var/lib/tandem --shell /usr/sbin/nologin tandem \
 && mkdir -p /var/lib/tandem \
 && chown tandem:tandem /var/lib/tandem
COPY --from=jre /opt/java/openjdk /opt/java/openjdk
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/opt/java/openjdk/bin:$PATH \
    JAVA_HOME=/opt/java/openjdk \
    TANDEM_JAVA_HOME=/opt/java/openjdk \
    TANDEM_HOME=/var/lib/tandem \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1
WORKDIR /var/lib/tandem
# Numeric IDs so Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001
ENTRYPOINT ["tandem"]
CMD ["--help"]
