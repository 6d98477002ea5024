# The Contractual image: one static binary on an empty base, run as a
# non-root user. No registry is reachable from the build machines, so the
# image builds FROM scratch around a binary built on the host:
#
#   CGO_ENABLED=0 go build -trimpath -o bin/contractual ./cmd/contractual
#   docker build -t contractual .
#
# The per-service images and their hardening (read-only root, no
# capabilities, healthchecks) arrive with the services; see docker-compose.yml.
FROM scratch
COPY bin/contractual /contractual
USER 65532:65532
ENTRYPOINT ["/contractual"]
CMD ["help"]
