# Builds natter's release binaries (all-in-one launcher, gateway, fanout, media and push workers, search indexer) into a small runtime image.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io download and the build between image builds; the binaries are copied out
# of the cached target dir in the same step because the mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p natter \
    && mkdir -p /out \
    && cp target/release/natter target/release/natter-gateway target/release/natter-fanout target/release/natter-media target/release/natter-push target/release/natter-indexer /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home natter
# The indexer's volume: a fresh named volume takes this directory's owner, so the indexer can write its index.
RUN mkdir -p /data/search-index && chown natter /data/search-index
COPY --from=builder /out/ /usr/local/bin/
USER natter
# compose.yaml picks the binary per service; the gateway is the usual one.
CMD ["natter-gateway"]
