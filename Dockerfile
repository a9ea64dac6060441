# One build, five images:
#
#     docker build --target operator -t chatflow/operator:dev .
#     docker build --target producer -t chatflow/producer:dev .
#     docker build --target consumer -t chatflow/consumer:dev .
#     docker build --target loadgen  -t chatflow/loadgen:dev  .
#     docker build --target server   -t chatflow/server:dev   .   # standalone, no cluster needed
#
# Every target shares the builder stage, so after the first the others take seconds. BuildKit is
# required (DOCKER_BUILDKIT=1 with Docker 20.10+, the default since 23.0) for the cache and secret
# mounts; the built-in frontend handles them, so no frontend image is pulled.
#
# Base images are arguments, so a machine without registry access can build from local images
# (scripts/images.sh --local-base makes them with debootstrap):
#   BUILDER_IMAGE  Debian bookworm with a Rust toolchain on PATH, gcc and cmake
#   RUNTIME_IMAGE  glibc and libgcc, for the dynamically linked binaries
#
# Behind a TLS-intercepting proxy, pass its CA bundle to the crate download:
#     docker build --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt ...

ARG RUST_VERSION=1.95
ARG BUILDER_IMAGE=rust:${RUST_VERSION}-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS builder
# aws-lc-sys (rustls' crypto provider) compiles its C sources with cc, and needs cmake where that
# build does not apply, e.g. on an architecture without pregenerated bindings.
RUN command -v cmake >/dev/null \
    || { apt-get update \
        && apt-get install -y --no-install-recommends cmake \
        && rm -rf /var/lib/apt/lists/*; }
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY chatflow chatflow
COPY producer producer
COPY consumer consumer
COPY fanout fanout
COPY testkit testkit
COPY loadgen loadgen
COPY operator operator
COPY server server
# A workspace member must be present for cargo to load the workspace; it is not built here.
COPY xtask xtask
# Named by chatflow_build_info and /info; `scripts/images.sh` passes the checkout's commit.
ARG CHATFLOW_COMMIT=unknown
ENV CHATFLOW_COMMIT=${CHATFLOW_COMMIT}
# The target directory is a cache mount, gone after this step, so the binaries are copied out
# within it. The release profile keeps line tables for backtraces; compressing them keeps that and
# shrinks the images.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    --mount=type=secret,id=cacert \
    if [ -s /run/secrets/cacert ]; then \
        export CARGO_HTTP_CAINFO=/run/secrets/cacert SSL_CERT_FILE=/run/secrets/cacert; \
    fi \
    && cargo build --release --locked \
        -p chatflow-operator -p chatflow-producer -p chatflow-consumer -p chatflow-loadgen \
        -p chatflow-server \
    && mkdir -p /out \
    && for bin in chatflow-operator chatflow-producer chatflow-consumer chatflow-loadgen \
        chatflow-server; do \
        objcopy --compress-debug-sections "target/release/$bin" "/out/$bin"; \
    done

# The kubelet can only enforce runAsNonRoot (set on every workload the operator writes) when the
# image names its user by number: 65532 is distroless' nonroot.

FROM ${RUNTIME_IMAGE} AS producer
COPY --from=builder /out/chatflow-producer /usr/local/bin/chatflow-producer
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chatflow-producer"]

FROM ${RUNTIME_IMAGE} AS consumer
COPY --from=builder /out/chatflow-consumer /usr/local/bin/chatflow-consumer
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/chatflow-consumer"]

FROM ${RUNTIME_IMAGE} AS loadgen
COPY --from=builder /out/chatflow-loadgen /usr/local/bin/chatflow-loadgen
USER 65532:65532
# The default --out (loadgen-report) is relative: start in a folder nonroot may write to.
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/chatflow-loadgen"]

# The standalone server: /chat, /subscribe and the chat page on one port, embedded queue.
FROM ${RUNTIME_IMAGE} AS server
COPY --from=builder /out/chatflow-server /usr/local/bin/chatflow-server
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chatflow-server"]

# Last, so a plain `docker build .` gives the operator.
FROM ${RUNTIME_IMAGE} AS operator
COPY --from=builder /out/chatflow-operator /usr/local/bin/chatflow-operator
USER 65532:65532
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/chatflow-operator"]
