#!/usr/bin/env bash
# Makes the Go builder image for machines without a container registry:
# the host's Go toolchain, a static busybox (the shell and tools the
# Dockerfile's build stage runs) and the host's CA roots (for the module
# proxy, and the runner image's roots), imported as one layer. The
# Dockerfile uses it in place of golang:1.26-alpine:
#
#   deploy/builder.sh && CONTRACTUAL_GO_IMAGE=contractual-builder:local docker compose up --build
#
# It needs go, docker, GNU tar and a static busybox (Debian: busybox-static).
# An image of the same name made from the same toolchain is kept.
#
# Usage: deploy/builder.sh [image]   (default contractual-builder:local)
set -euo pipefail

image=${1:-contractual-builder:local}
goroot=$(go env GOROOT)
version=$(go env GOVERSION)
label=org.contractual.builder.go
# The revision of this recipe, in a label of its own: bump it when the
# image's contents change.
recipe=2
recipe_label=org.contractual.builder.recipe

labels=$(docker image inspect -f "{{index .Config.Labels \"$label\"}} {{index .Config.Labels \"$recipe_label\"}}" "$image" 2>/dev/null || true)
if [[ $labels == "$version $recipe" ]]; then
	echo "$image: $version (kept)"
	exit 0
fi

busybox=$(command -v busybox || true)
if [[ -z $busybox ]] || ! "$busybox" --list >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; then
	echo "deploy/builder.sh: needs a static busybox on PATH (Debian: apt-get install busybox-static)" >&2
	exit 1
fi
roots=/etc/ssl/certs/ca-certificates.crt
if [[ ! -r $roots ]]; then
	echo "deploy/builder.sh: no CA roots at $roots (Debian: apt-get install ca-certificates)" >&2
	exit 1
fi
base=$(basename "$goroot")
case $base in bin | etc | tmp) echo "deploy/builder.sh: GOROOT $goroot: rename it" >&2; exit 1 ;; esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/etc/ssl/certs" "$stage/tmp"
chmod 1777 "$stage/tmp"
cp "$busybox" "$stage/bin/busybox"
for applet in $("$busybox" --list); do
	[[ $applet == busybox ]] || ln -s busybox "$stage/bin/$applet"
done
cp "$roots" "$stage/etc/ssl/certs/ca-certificates.crt"

# One tar stream: the staging directory, then GOROOT renamed to
# /usr/local/go (without its tests and docs, which no build reads). The
# two directories are excluded at GOROOT's top only (--anchored), not
# src/go/doc, a package of the standard library.
tar -c -f - -C "$stage" bin etc tmp \
	-C "$(dirname "$goroot")" --anchored --exclude="$base/test" --exclude="$base/doc" --no-anchored --exclude=testdata \
	--transform="s,^$base\(/\|\$\),usr/local/go\1," "$base" |
	docker import \
		--change 'ENV PATH=/usr/local/go/bin:/go/bin:/bin' \
		--change 'ENV GOPATH=/go' \
		--change 'ENV GOTOOLCHAIN=local' \
		--change "LABEL $label=$version" \
		--change "LABEL $recipe_label=$recipe" \
		- "$image" >/dev/null
echo "$image: $version"
