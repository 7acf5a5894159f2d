#!/usr/bin/env bash
# Builds the Go tools the client tests drive (crane and oras, registry clients; siftool, the
# reference SIF reader) into the directory $1, unless they are already there. Pinned versions,
# from the Go module proxy; idempotent.
set -euo pipefail
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)

crane_version=v0.22.1
oras_version=v1.3.1
siftool_version=v2.24.2

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
