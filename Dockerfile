# Build: docker build -t rtsync .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY lua ./lua
RUN cargo build --release --locked --bin rtsync && strip target/release/rtsync

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home rtsync
COPY --from=build /src/target/release/rtsync /usr/local/bin/rtsync
USER 10001
ENV RTS_LISTEN=0.0.0.0:4000
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
  CMD ["/usr/local/bin/rtsync", "--health-check"]
ENTRYPOINT ["/usr/local/bin/rtsync"]
