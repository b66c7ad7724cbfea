# syntax=docker/dockerfile:1
# The stocktwits-pulse app image: every `pulse` command (producers, worker, alerts, topics).
# Multi-stage: build wheels with a compiler, ship only the virtualenv on a slim base, non-root.
# Pin by digest in production (docker buildx imagetools inspect python:3.11.14-slim-bookworm).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
# The producers' and the fan-out's native fast paths (native/: Rust, built by maturin): the
# toolchain of the official Rust image, in this stage only. --build-arg PULSE_NATIVE=0 skips
# it; both then run their pure-Python paths (same records, slower).
ARG PULSE_NATIVE=1
COPY --from=rust:1.95.0-slim-bookworm /usr/local/cargo /usr/local/cargo
COPY --from=rust:1.95.0-slim-bookworm /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/cargo/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pulse/ pulse/
COPY schemas/ schemas/
COPY producers/ producers/
COPY processors/ processors/
COPY native/ native/
# not editable: the runtime stage gets a self-contained venv; rocksdb for PULSE_STORE=rocksdb
RUN pip install --upgrade pip \
 && pip install ".[rocksdb]" \
 && if [ "$PULSE_NATIVE" != 0 ]; then pip install ./native && python -c "import pulse_native"; fi \
 && python -c "import pulse.cli, pulse.consumers.alerts, pulse.producers.cli, pulse.schemas.serde"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="stocktwits-pulse" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 pulse \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/pulse --create-home pulse
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# the Faust worker keeps its table data under the working directory
WORKDIR /var/lib/pulse
USER 10001:10001
# /healthz /readyz /metrics on 6066: signals worker · 6067: fan-out · 9300: a producer or
# alerts. They listen on PULSE_BIND_HOST (loopback by default): Compose and the k8s
# ConfigMap set 0.0.0.0.
EXPOSE 6066 6067 9300
ENTRYPOINT ["pulse"]
CMD ["--help"]
