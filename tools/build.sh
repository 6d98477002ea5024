#!/usr/bin/env bash
# Builds every example tool in tools/*/ to tools/<name>/<name>.wasm,
# reproducibly, and rewrites the `module:` line of tools/<name>/contract.yaml
# to the new digest (sha256:<hex of the .wasm>).
#
# A tool with a go.mod is built from source, twice into a temporary directory,
# and the two digests are compared; a mismatch fails the build. A tool with an
# `origin` file is a stock plugin taken unchanged from a Go module this
# repository requires: the file says "<module path> <file in the module>", and
# the version is the one go.mod pins. CI runs:
#
#   tools/build.sh && git diff --exit-code tools/
#
# Usage: tools/build.sh [name ...]   (default: every tools/*/ with a go.mod or an origin)
set -euo pipefail

# The bytes depend on the Go toolchain: pin it (the go command downloads this
# exact toolchain through the module proxy if the local one differs).
export GOTOOLCHAIN=go1.26.8
export GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0
# Ignore caller settings that change the output.
export GOFLAGS=-mod=readonly GOWORK=off GOWASM= GOEXPERIMENT=
unset GOROOT_FINAL 2>/dev/null || true

tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

build() { # build <dir> <out>
	(cd "$1" && go build -buildmode=c-shared -trimpath -buildvcs=false \
		-ldflags='-s -w -buildid=' -o "$2" .)
}

if [ "$#" -gt 0 ]; then
	names=("$@")
else
	names=()
	for d in "$tools_dir"/*/; do
		if [ -f "$d/go.mod" ] || [ -f "$d/origin" ]; then names+=("$(basename "$d")"); fi
	done
fi

# fetch <dir> <out>: copies a stock plugin out of the module its origin names.
fetch() {
	local mod file moddir
	read -r mod file <"$1/origin"
	moddir="$(cd "$tools_dir/.." && GOOS= GOARCH= go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	if [ -z "$moddir" ] || [ ! -f "$moddir/$file" ]; then
		echo "build.sh: $1/origin: no $file in $mod" >&2
		exit 1
	fi
	cp "$moddir/$file" "$2"
	cp "$moddir/$file" "${2%.1.wasm}.2.wasm"
}

for name in "${names[@]}"; do
	dir="$tools_dir/$name"
	if [ -f "$dir/origin" ]; then
		fetch "$dir" "$tmp/$name.1.wasm"
	elif [ -f "$dir/go.mod" ] && [ -f "$dir/main.go" ]; then
		build "$dir" "$tmp/$name.1.wasm"
		build "$dir" "$tmp/$name.2.wasm"
	else
		echo "build.sh: $dir is not a tool (no go.mod/main.go, no origin)" >&2
		exit 1
	fi
	d1="$(sha256sum "$tmp/$name.1.wasm" | cut -d' ' -f1)"
	d2="$(sha256sum "$tmp/$name.2.wasm" | cut -d' ' -f1)"
	if [ "$d1" != "$d2" ]; then
		echo "build.sh: $name: two builds differ ($d1 vs $d2): not reproducible" >&2
		exit 1
	fi
	cp "$tmp/$name.1.wasm" "$dir/$name.wasm"

	contract="$dir/contract.yaml"
	if [ -f "$contract" ]; then
		if ! grep -q '^module: sha256:[0-9a-f]\{64\}$' "$contract"; then
			echo "build.sh: $contract: no 'module: sha256:<64 hex>' line" >&2
			exit 1
		fi
		sed -i.bak "s/^module: sha256:[0-9a-f]\{64\}\$/module: sha256:$d1/" "$contract"
		rm -f "$contract.bak"
	else
		echo "build.sh: warning: $contract missing" >&2
	fi
	printf '%-10s %9d bytes  sha256:%s\n' "$name" "$(wc -c <"$dir/$name.wasm")" "$d1"
done
