# syntax=docker/dockerfile:1
#
# orderd's container image: a static binary on distroless, run as the
# non-root user 65532, its embedded store in the /data volume.
#
#   docker build -t orderd .
#   docker run -p 127.0.0.1:8080:8080 -v orderd-data:/data orderd
#
# compose.yaml runs it with ScyllaDB and Redpanda.

# The build stage. The Go tag follows go.mod's `go` line (1.26.8), so the
# toolchain is never downloaded at build time.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly

# Modules first, in their own layer: it is rebuilt only when go.mod or
# go.sum change, not on every source edit.
COPY go.mod go.sum ./
RUN go mod download && go mod verify

COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/orderd ./cmd/orderd

# The final image has no shell to mkdir with, so the data directory is made
# here and copied with its owner. A named volume mounted on /data starts as a
# copy of it, owned by 65532; a bind mount keeps the host directory's owner
# and must be writable by uid 65532.
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot

# VERSION and REVISION are for a release build to pass, e.g.
#   docker build --build-arg VERSION=1.2.0 --build-arg REVISION="$(git rev-parse HEAD)" .
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="orderd" \
      org.opencontainers.image.description="Event-sourced order service: HTTP commands and queries, an event store that is its own outbox, a relay to Kafka" \
      org.opencontainers.image.source="https://github.com/orderd/orderd" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"

COPY --from=build /out/orderd /orderd
COPY --from=build --chown=65532:65532 /out/data /data

ENV ORDERD_DATA_DIR=/data \
    ORDERD_HTTP_ADDR=:8080
VOLUME ["/data"]
EXPOSE 8080

# The :nonroot base already runs as 65532; said again so that nothing
# layered on top runs as root by accident.
USER 65532:65532

# Distroless has no curl or wget: the binary checks itself
# (GET http://127.0.0.1:8080/healthz, exit 0 on 200).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/orderd", "healthcheck"]

ENTRYPOINT ["/orderd"]
