# Contractual's images: one target per service (gateway, engine, policy,
# runner, broker, audit, scheduler, worker, ca), the CLI (cli), and the Tailscale sidecar of the
# compose profile tailnet (tailscale). One build stage compiles
# Contractual's binaries, another the sidecar's from tailscale.com's
# sources; all static (CGO_ENABLED=0) and -trimpath. Each final image is
# FROM scratch and holds its binaries, the empty directories it writes
# (owned by its user) and, for those that dial out (runner, cli,
# tailscale), the CA roots. No shell, no package manager; each service runs
# as its own UID in group 10000, the sidecar as 10010 outside it.
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
# The directories the images mount volumes on, as trees to copy to /. A
# fresh named volume takes the owner and mode of the directory at its mount
# point in the image of the first container created on it; each final stage
# sets the owner with COPY --chown (there, and not here, so that a changed
# owner changes the layer's cache key): the service for its store (/data,
# /cache), and ca (10009) for the certificates, which the service reads
# through its group (10000), in every image alike, since compose creates
# ca-init and the services at once.
RUN mkdir -p -m 0750 /dirs/data/data /dirs/cache/cache /dirs/certs/run/certs \
      /dirs/ca/certs/gateway /dirs/ca/certs/policy /dirs/ca/certs/runner /dirs/ca/certs/broker /dirs/ca/certs/audit \
      /dirs/ca/certs/scheduler /dirs/ca/certs/worker /dirs/ca/certs/engine && \
    mkdir -p -m 0700 /dirs/ca/ca/root /dirs/ca/ca/issuer && \
    chmod 0755 /dirs/certs/run /dirs/ca/certs /dirs/ca/ca

WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags='-s -w' -o /out/ \
      ./cmd/contractual-gateway ./cmd/contractual-policy ./cmd/contractual-runner \
      ./cmd/contractual-broker ./cmd/contractual-audit ./cmd/contractual-scheduler ./cmd/contractual-worker \
      ./cmd/contractual-engine \
      ./cmd/contractual-ca
# The CLI is built only for its own target.
FROM build AS build-cli
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags='-s -w' -o /out/ ./cmd/contractual

# The Tailscale sidecar (compose profile tailnet): containerboot, tailscaled
# and tailscale, built from the sources of the tailscale.com module that
# deploy/tailscale/go.mod pins (no registry image). A stage of its own that
# sees nothing but that module's go.mod and go.sum, so that a change to
# Contractual's source never rebuilds it.
FROM ${GO_IMAGE} AS build-tailscale
ARG GOPROXY=https://proxy.golang.org,direct
ENV CGO_ENABLED=0 GOFLAGS=-trimpath GOPATH=/go GOCACHE=/root/.cache/go-build
# Its state directory, for the named volume, and /tmp (tailscaled's
# socket), should the root not be a tmpfs.
RUN mkdir -p -m 0700 /dirs/var/lib/tailscale && mkdir -p -m 1777 /dirs/tmp
WORKDIR /src
COPY deploy/tailscale/go.mod deploy/tailscale/go.sum ./
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags='-s -w' -o /out/ \
      tailscale.com/cmd/containerboot tailscale.com/cmd/tailscaled tailscale.com/cmd/tailscale

FROM scratch AS gateway
COPY --from=build /out/contractual-gateway /contractual-gateway
COPY --from=build --chown=10001:10000 /dirs/data/ /
COPY --from=build --chown=10009:10000 /dirs/certs/ /
USER 10001:10000
EXPOSE 8080 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-gateway", "health"]
ENTRYPOINT ["/contractual-gateway"]

# The engine: no CA roots, as it dials nothing but the other services
# (its model requests are the relay tool's calls, made by the runner).
FROM scratch AS engine
COPY --from=build /out/contractual-engine /contractual-engine
COPY --from=build --chown=10002:10000 /dirs/data/ /
COPY --from=build --chown=10009:10000 /dirs/certs/ /
USER 10002:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-engine", "health"]
ENTRYPOINT ["/contractual-engine"]

FROM scratch AS policy
COPY --from=build /out/contractual-policy /contractual-policy
COPY --from=build --chown=10003:10000 /dirs/data/ /
COPY --from=build --chown=10009:10000 /dirs/certs/ /
USER 10003:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-policy", "health"]
ENTRYPOINT ["/contractual-policy"]

FROM scratch AS runner
COPY --from=build /out/contractual-runner /contractual-runner
COPY --from=build --chown=10004:10000 /dirs/cache/ /
COPY --from=build --chown=10009:10000 /dirs/certs/ /
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 10004:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-runner", "health"]
ENTRYPOINT ["/contractual-runner"]

FROM scratch AS broker
COPY --from=build /out/contractual-broker /contractual-broker
COPY --from=build --chown=10005:10000 /dirs/data/ /
COPY --from=build --chown=10009:10000 /dirs/certs/ /
USER 10005:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-broker", "health"]
ENTRYPOINT ["/contractual-broker"]

FROM scratch AS audit
COPY --from=build /out/contractual-audit /contractual-audit
COPY --from=build --chown=10007:10000 /dirs/data/ /
COPY --from=build --chown=10009:10000 /dirs/certs/ /
USER 10007:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-audit", "health"]
ENTRYPOINT ["/contractual-audit"]

FROM scratch AS scheduler
COPY --from=build /out/contractual-scheduler /contractual-scheduler
COPY --from=build --chown=10006:10000 /dirs/data/ /
COPY --from=build --chown=10009:10000 /dirs/certs/ /
USER 10006:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-scheduler", "health"]
ENTRYPOINT ["/contractual-scheduler"]

FROM scratch AS worker
COPY --from=build /out/contractual-worker /contractual-worker
COPY --from=build --chown=10008:10000 /dirs/data/ /
COPY --from=build --chown=10009:10000 /dirs/certs/ /
USER 10008:10000
EXPOSE 8443 9090
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 CMD ["/contractual-worker", "health"]
ENTRYPOINT ["/contractual-worker"]

FROM scratch AS ca
COPY --from=build /out/contractual-ca /contractual-ca
COPY --from=build --chown=10009:10000 /dirs/ca/ /
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

# The Tailscale sidecar: containerboot starts tailscaled (userspace
# networking: no TUN device, no capabilities), logs in and applies the
# serve config. Its own user, outside group 10000: it reads no certificate.
# It talks to the real control plane and DERP relays, so it holds the CA
# roots.
FROM scratch AS tailscale
COPY --from=build-tailscale /out/ /usr/local/bin/
COPY --from=build-tailscale /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build-tailscale --chown=10010:10010 /dirs/ /
ENV PATH=/usr/local/bin TS_USERSPACE=true TS_STATE_DIR=/var/lib/tailscale TS_SOCKET=/tmp/tailscaled.sock
USER 10010:10010
HEALTHCHECK --interval=5s --timeout=10s --start-period=2m --retries=3 \
    CMD ["tailscale", "--socket=/tmp/tailscaled.sock", "status", "--peers=false"]
ENTRYPOINT ["containerboot"]
