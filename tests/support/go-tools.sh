#!/usr/bin/env bash
# Builds the Go tools the client tests drive (crane and oras, registry clients; siftool, the
# reference SIF reader; scs-build, Sylabs' remote-build client) into the directory $1, unless they
# are already there. Pinned versions, from the Go module proxy; idempotent.
set -euo pipefail
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)

crane_version=v0.22.1
oras_version=v1.3.1
siftool_version=v2.24.2
# Not v0.9.20, the newest tag: its getFiles always returns a non-nil slice, so every definition
# without a %files section fails locally with "no paths specified for build context".
scs_build_version=v0.9.19
# The module's h1: hash (as go.sum writes it) for $scs_build_version; it matches the tag's tree.
scs_build_sum='h1:HnLhzVbV+tn8XHj4giCcMoLF39wcZaJrw44yR9SiYKk='

# crane: `go install` resolves a single tagged module, which the proxy serves.
if [ ! -x "$out/crane" ]; then
    GOBIN="$out/.crane-build" go install \
        "github.com/google/go-containerregistry/cmd/crane@$crane_version"
    mv "$out/.crane-build/crane" "$out/crane"
    rm -rf "$out/.crane-build"
fi

# oras: its go.mod has replace directives, so `go install …@version` refuses it; build it from
# the downloaded module instead.
if [ ! -x "$out/oras" ]; then
    dir=$(go mod download -json "oras.land/oras@$oras_version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    [ -n "$dir" ] || { echo "go mod download oras.land/oras@$oras_version gave no Dir" >&2; exit 1; }
    (cd "$dir" && go build -trimpath -o "$out/.oras-build" ./cmd/oras)
    mv "$out/.oras-build" "$out/oras"
fi

# siftool: sylabs/sif's own CLI, a tagged module without replace directives, like crane.
if [ ! -x "$out/siftool" ]; then
    GOBIN="$out/.siftool-build" go install \
        "github.com/sylabs/sif/v2/cmd/siftool@$siftool_version"
    mv "$out/.siftool-build/siftool" "$out/siftool"
    rm -rf "$out/.siftool-build"
fi

# scs-build: sylabs/scs-build-client's CLI. The proxy serves this module's zip, but the checksum
# database it fronts has no entry for it, so the download skips that lookup for this one module
# (GONOSUMDB) and checks the zip's hash against the pinned one instead. Built from the downloaded
# module dir, so its own go.sum verifies every dependency.
if [ ! -x "$out/scs-build" ]; then
    mod=github.com/sylabs/scs-build-client
    json=$(GONOSUMDB=$mod go mod download -json "$mod@$scs_build_version") || {
        echo "go mod download $mod@$scs_build_version failed: $json" >&2; exit 1; }
    dir=$(printf '%s\n' "$json" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    sum=$(printf '%s\n' "$json" | sed -n 's/.*"Sum": "\(.*\)".*/\1/p')
    [ -n "$dir" ] || { echo "go mod download $mod@$scs_build_version gave no Dir: $json" >&2; exit 1; }
    [ "$sum" = "$scs_build_sum" ] || {
        echo "$mod@$scs_build_version: hash $sum, expected $scs_build_sum" >&2; exit 1; }
    (cd "$dir" && go build -trimpath -o "$out/.scs-build-build" ./cmd/scs-build)
    mv "$out/.scs-build-build" "$out/scs-build"
fi
