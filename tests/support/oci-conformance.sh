#!/usr/bin/env bash
# Builds the OCI distribution-spec conformance suite into $1, unless it is already there.
# Pinned to the ginkgo suite the Go module proxy serves (distribution-spec commit f2182352d4cc,
# 2023-11-01); the redesigned 2026 suite has no version on the proxy yet.
set -euo pipefail
out=$1
[ -x "$out" ] && exit 0
module=github.com/opencontainers/distribution-spec/conformance
version=v0.0.0-20231101194043-f2182352d4cc
export GONOSUMDB=$module   # the checksum database has no entry for this pseudo-version
dir=$(go mod download -json "$module@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
mkdir -p "$(dirname "$out")"
cd "$dir" && go test -c -o "$out" .
