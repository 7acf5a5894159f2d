#!/usr/bin/env bash
# Makes a minimal Debian bookworm image with python3 and pip in buildah's local storage, from
# Debian's mirror alone (no Docker Hub). Usage: debian-python-base.sh IMAGE [ARCH]
# A test fixture until `kiln base bootstrap` exists.
set -euo pipefail
image=$1
arch=${2:-amd64}
mirror=${KILN_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=0

# merged-usr hook: without it apt pulls in usrmerge and perl. Empty hosts/hostname/resolv.conf
# keep buildah from adding placeholders to every layer; /dev nodes are left out of the tar.
mmdebstrap --quiet --arch="$arch" --variant=minbase \
  --include=python3,python3-pip,ca-certificates,procps \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --aptopt='Acquire::Languages "none"' --dpkgopt='force-unsafe-io' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='for f in resolv.conf hostname hosts; do : > "$1/etc/$f"; chmod 644 "$1/etc/$f"; done' \
  bookworm - "$mirror" | mmtarfilter '--path-exclude=/dev/*' > "$work/rootfs.tar"

ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$work/rootfs.tar" /
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --cmd '["/bin/bash"]' --os linux --arch "$arch" "$ctr"
buildah commit --quiet --rm --timestamp 0 --identity-label=false --omit-history "$ctr" "$image" >/dev/null
