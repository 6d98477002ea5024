# Contractual's images: one target per service (gateway, policy, runner,
# broker, audit, ca) and the CLI (cli). One build stage compiles every
# binary, static (CGO_ENABLED=0) and -trimpath; each final image is FROM
# scratch and holds its binary, the empty directories it writes (owned by
# its user) and, for the runner alone, which dials out, the CA roots. No
# shell, no package manager; each runs as its own UID in group 10000.
#
# docker-compose.yml builds every target with BuildKit (the default builder
# of Docker 23 and later, and what Compose v2 uses):
#
#   docker compose up --build
#
# The Go toolchain comes from GO_IMAGE (golang:1.26-alpine, from a
# registry). A machine without a registry passes a builder image it made
# itself, from the host's Go toolchain (deploy/builder.sh):
#
#   deploy/builder.sh && CONTRACTUAL_GO_IMAGE=contractual-builder:local docker compose up --build
#
# Modules come through GOPROXY (a build argument) and are cached in a layer
# keyed by go.mod and go.sum; the compiler's cache is a BuildKit cache mount.

ARG GO_IMAGE=golang:1.26-alpine

FROM ${GO_IMAGE} AS build
ARG GOPROXY=https://proxy.golang.org,direct
ENV CGO_ENABLED=0 GOFLAGS=-trimpath GOPATH=/go GOCACHE=/root/.cache/go-build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags='-s -w' -o /out/ \
      ./cmd/contractual-gateway ./cmd/contractual-policy ./cmd/contractual-runner \
      ./cmd/contractual-broker ./cmd/contractual-audit ./cmd/contractual-ca
# The directories each image writes, owned by its user: a fresh named volume
# takes the owner and mode of the image's directory at its mount point.
RUN set -eu; \
    mk() { d=/dirs/$1; shift; uid=$1; shift; for p in "$@"; do \
      mkdir -p "$d$p"; chown "$uid:10000" "$d$p"; chmod 0750 "$d$p"; done; }; \
    mk gateway 10001 /data /run/certs; \
    mk policy  10003 /data /run/certs; \
    mk runner  10004 /cache /run/certs; \
    mk broker  10005 /data /run/certs; \
    mk audit   10007 /data /run/certs; \
    mk ca      10009 /ca/root /ca/issuer /certs/gateway /certs/policy /certs/runner /certs/broker /certs/audit; \
    chmod 0700 /dirs/ca/ca/root /dirs/ca/ca/issuer

# The CLI is built only for its own target.
FROM build AS build-cli
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags='-s -w' -o /out/ ./cmd/contractual

FROM scratch AS gateway
COPY --from=build /out/contractual-gateway /contractual-gateway
COPY --from=build /dirs/gateway/ /
USER 10001:10000
EXPOSE 8080 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-gateway", "health"]
ENTRYPOINT ["/contractual-gateway"]

FROM scratch AS policy
COPY --from=build /out/contractual-policy /contractual-policy
COPY --from=build /dirs/policy/ /
USER 10003:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-policy", "health"]
ENTRYPOINT ["/contractual-policy"]

FROM scratch AS runner
COPY --from=build /out/contractual-runner /contractual-runner
COPY --from=build /dirs/runner/ /
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 10004:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-runner", "health"]
ENTRYPOINT ["/contractual-runner"]

FROM scratch AS broker
COPY --from=build /out/contractual-broker /contractual-broker
COPY --from=build /dirs/broker/ /
USER 10005:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-broker", "health"]
ENTRYPOINT ["/contractual-broker"]

FROM scratch AS audit
COPY --from=build /out/contractual-audit /contractual-audit
COPY --from=build /dirs/audit/ /
USER 10007:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-audit", "health"]
ENTRYPOINT ["/contractual-audit"]

FROM scratch AS ca
COPY --from=build /out/contractual-ca /contractual-ca
COPY --from=build /dirs/ca/ /
USER 10009:10000
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-ca", "health"]
ENTRYPOINT ["/contractual-ca"]

# The CLI, for `docker compose run --rm cli run <module.wasm> ...` with the
# working directory mounted read-only at /work (the cli profile). Its
# `run` dials public HTTPS for a tool's egress, so it holds the CA roots.
FROM scratch AS cli
COPY --from=build-cli /out/contractual /contractual
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/contractual"]
CMD ["help"]
