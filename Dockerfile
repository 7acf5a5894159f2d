# kiln's own image: kiln on a slim Debian with what its builds run (buildah and its runtime for
# Dockerfile and definition builds, squashfs-tools for SIFs, uv for pip resolution).
#
#   docker build -t kiln .                        # compiles kiln in the `compiled` stage
#   buildah bud -t kiln .                         # the same with buildah
#
# The image is of the builder's architecture: build it on an arm64 host (or with
# `--platform linux/arm64` under emulation, slowly) for arm64 workers.
#
# A kiln compiled outside (CI, or `cargo build --release --locked` on a bookworm host: the binary
# must not need a newer glibc than the runtime's 2.36) goes in through the `prebuilt` stage,
# which copies it from the build context; the `compiled` stage is then skipped (BuildKit and
# buildah skip stages the image does not use):
#
#   cargo build --release --locked
#   docker build --build-arg KILN_FROM=prebuilt -t kiln .     # takes target/release/kiln
#   docker build --build-arg KILN_FROM=prebuilt --build-arg KILN_BINARY=path/in/context/kiln .
#
# Every base is a build argument, so a site without Docker Hub points them at its own mirror or
# at bases kiln made (`kiln base create --name kiln/base/runtime:bookworm --package buildah …`):
# the runtime stage installs only the packages its base lacks, with apt, so a base that already
# holds them needs no network and no apt at all.
#
# The image runs as the unprivileged user `kiln` (uid 10001): right for API nodes and for workers
# of native (conda, pip) builds. Workers of Dockerfile and definition builds contain users' steps
# in namespaces and cgroups of their own, which needs root: they run the image as uid 0 (see
# deploy/kubernetes/worker-recipes.yaml).

ARG RUST_IMAGE=docker.io/library/rust:1.94-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
# Where kiln's binary comes from: `compiled` here, or `prebuilt` outside.
ARG KILN_FROM=compiled

# uv as Astral publishes it: an image holding the static binary at /uv.
FROM ${UV_IMAGE} AS uv

FROM ${RUST_IMAGE} AS compiled
WORKDIR /src
# Only what the package needs (.dockerignore keeps target/ and the rest out). benches/ is there
# because Cargo.toml names its targets; they are not built.
COPY Cargo.toml Cargo.lock askama.toml ./
COPY src src
COPY migrations migrations
COPY templates templates
COPY recipes recipes
COPY static static
COPY benches benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kiln && cp target/release/kiln /kiln

# kiln compiled outside the image, taken from the build context.
FROM scratch AS prebuilt
ARG KILN_BINARY=target/release/kiln
COPY ${KILN_BINARY} /kiln

FROM ${KILN_FROM} AS kiln-binary
# An instruction, so the stage is committed like any other: buildah (1.28) leaves the working
# container of a stage without one behind, and with it the image it was made from.
ARG KILN_FROM

FROM ${RUNTIME_IMAGE} AS runtime
# What kiln runs: buildah with runc, slirp4netns, nftables and uidmap (the containment of build
# steps; util-linux's nsenter, unshare and setpriv are in every Debian base), passwd and login
# (useradd of the sandbox user, nologin), squashfs-tools (mksquashfs for SIFs), ca-certificates, dpkg (this check) and
# tini (PID 1: it reaps what build steps leave behind and passes signals on to kiln).
ARG RUNTIME_PACKAGES="buildah ca-certificates dpkg login nftables passwd runc slirp4netns squashfs-tools tini uidmap"
RUN set -eu; \
    missing=""; \
    for package in $RUNTIME_PACKAGES; do \
        status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true); \
        [ "$status" = installed ] || missing="$missing $package"; \
    done; \
    if [ -n "$missing" ]; then \
        echo "installing:$missing"; \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/*; \
    else \
        echo "the base already holds:" $RUNTIME_PACKAGES; \
    fi
COPY --from=uv /uv /usr/local/bin/uv
# `kiln`, whom the image runs as, owns the data directory (kiln keeps it 0700). `kiln-build` is
# the sandbox user whose subordinate ids build steps' root maps to, made here so a root worker
# need not add it at start.
RUN set -eu; \
    groupadd --gid 10001 kiln; \
    useradd --uid 10001 --gid 10001 --home-dir /var/lib/kiln --shell /usr/sbin/nologin kiln; \
    install -d -o 10001 -g 10001 -m 0700 /var/lib/kiln; \
    useradd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group kiln-build; \
    grep -q '^kiln-build:' /etc/subuid 2>/dev/null || echo 'kiln-build:100000:65536' >> /etc/subuid; \
    grep -q '^kiln-build:' /etc/subgid 2>/dev/null || echo 'kiln-build:100000:65536' >> /etc/subgid
COPY --from=kiln-binary /kiln /usr/local/bin/kiln
ENV KILN_LISTEN=0.0.0.0:9090 \
    KILN_DATA_DIR=/var/lib/kiln \
    KILN_UV=/usr/local/bin/uv
WORKDIR /var/lib/kiln
EXPOSE 9090
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/kiln"]
CMD ["serve"]

