# syntax=docker/dockerfile:1

# Build stage. pq-sys (libpq) and libsqlite3-sys are built from bundled sources; libpq links
# the system OpenSSL (libssl-dev). cmake and clang cover aws-lc-sys on platforms where it does
# not build with cc alone.
# The toolchain the project is built and tested with (rust-version of the CI machine).
FROM rust:1.95.0-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Migrations are embedded at compile time; the binary needs no files besides its config.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && cp target/release/tollgate /usr/local/bin/tollgate

# Runtime stage.
# Pinned to a Debian point release (the one rust:1.95.0-bookworm builds on or older), so that a
# rebuild gets the same runtime; move it forward deliberately, with the builder.
FROM debian:12.12-slim
# libssl3: libpq is linked against the system OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin tollgate
WORKDIR /app
COPY --from=builder /usr/local/bin/tollgate /usr/local/bin/tollgate
COPY config/ /app/config/
# data/ holds the SQLite database when DATABASE_URL is not set; mount a volume here to keep it.
RUN mkdir -p /app/data && chown tollgate:tollgate /app/data
USER tollgate
EXPOSE 8080
# Readiness: the process answers and the database is reachable (`tollgate healthcheck` asks
# http://127.0.0.1:<server.port>/readyz; no curl needed in the image).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/tollgate", "healthcheck"]
# Its defaults are compiled in; /etc/tollgate/tollgate.toml is merged over them when mounted,
# or the file named by --config / TOLLGATE_CONFIG (e.g. /app/config/examples/<file>.toml).
# Environment variables override both.
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve"]
