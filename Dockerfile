# gatewayd container image. Built for linux/amd64 and linux/arm64 by
# .github/workflows/release.yml; the build stage runs on the builder's own platform and
# cross-compiles, so an arm64 image needs no emulated compiler.
#
#   docker build -t gatewayd .
#   docker run -p 8642:8642 -e API_SERVER_KEY="$(gatewayd keygen)" gatewayd
#
# It listens on 0.0.0.0:8642 inside the container, so it needs a strong key
# (API_SERVER_KEY, API_SERVER_KEY_FILE, or a secret at /run/secrets/api_server_key with
# CREDENTIALS_DIRECTORY=/run/secrets); without one it exits 78 and says why. Sessions go
# to the volume /var/lib/gatewayd. See docs/operations.md#container-image.

FROM --platform=$BUILDPLATFORM rust:1-bookworm AS build
ARG TARGETARCH
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-gnu > /rust-target ;; \
      arm64) echo aarch64-unknown-linux-gnu > /rust-target \
             && apt-get update && apt-get install -y --no-install-recommends \
                gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac \
    && rustup target add "$(cat /rust-target)"
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target "$(cat /rust-target)" \
    && cp "target/$(cat /rust-target)/release/gatewayd" /gatewayd

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/gatewayd --shell /usr/sbin/nologin gatewayd \
    && install -d -o gatewayd -g gatewayd -m 0700 /var/lib/gatewayd
COPY --from=build /gatewayd /usr/bin/gatewayd
COPY config/gatewayd.example.toml /etc/gatewayd/gatewayd.toml
USER gatewayd
VOLUME /var/lib/gatewayd
EXPOSE 8642
# The container's network is its own: 0.0.0.0 here is what -p publishes.
ENV API_SERVER_HOST=0.0.0.0 \
    GATEWAYD_LOG_FORMAT=json
ENTRYPOINT ["/usr/bin/gatewayd", "--config", "/etc/gatewayd/gatewayd.toml", "--data-dir", "/var/lib/gatewayd"]
