# Multi-stage build: compile in the Rust image, run in a small Debian image as a non-root user.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
COPY src src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home bridge
COPY --from=build /src/target/release/bridge /usr/local/bin/bridge
USER 10001
# Inside a container, loopback is private to it: serve /metrics, /healthz and /readyz on
# every interface so kubelet probes and Prometheus reach them (outside a container the
# default is 127.0.0.1:9464).
ENV BRIDGE_HTTP_LISTEN=0.0.0.0:9464
EXPOSE 9464
ENTRYPOINT ["bridge"]
CMD ["run", "/etc/bridge/routes.yaml"]
