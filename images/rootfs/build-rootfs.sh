#!/usr/bin/env bash
# Build the registry-free base image `sandbox-fleet/rootfs:bookworm` from Debian's packages.
#
# debootstrap (minbase + python3, git, ca-certificates, tini) into a cached directory, strip what a
# sandbox never reads (docs, man pages, locales, apt lists), then `docker import` the tree.
# Nothing is pulled from a container registry. Re-running is a no-op while the image exists.
#
# Environment:
#   ROOTFS_IMAGE     image to produce           (default sandbox-fleet/rootfs:bookworm)
#   ROOTFS_SUITE     Debian suite               (default bookworm; python3 there is 3.11)
#   DEBIAN_MIRROR    mirror for debootstrap     (default http://deb.debian.org/debian)
#   SANDBOX_FLEET_CACHE  cache folder           (default ~/.cache/sandbox-fleet)
#   FORCE=1          rebuild the tree and re-import even if the image exists
set -euo pipefail

IMAGE=${ROOTFS_IMAGE:-sandbox-fleet/rootfs:bookworm}
SUITE=${ROOTFS_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${SANDBOX_FLEET_CACHE:-${HOME:-/root}/.cache/sandbox-fleet}
DIR="$CACHE/rootfs/$SUITE"
DEBS="$CACHE/debs/$SUITE"
# tini is PID 1 of the sandbox images: it reaps orphaned processes and forwards signals (~0.5 MiB).
PACKAGES=python3,git,ca-certificates,tini

log() { printf '[build-rootfs] %s\n' "$*" >&2; }

if [ -z "${FORCE:-}" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already exists; skipping (FORCE=1 rebuilds)"
    exit 0
fi
[ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }

if [ -n "${FORCE:-}" ] || [ "$(cat "$DIR/.sandbox-fleet-complete" 2>/dev/null | cut -d' ' -f2)" != "$PACKAGES" ]; then
    rm -rf "$DIR"
    mkdir -p "$DIR" "$DEBS"
    log "debootstrap $SUITE into $DIR (debs cached in $DEBS)"
    debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$DEBS" \
        "$SUITE" "$DIR" "$MIRROR" >&2

    log "stripping docs, man pages, locales and apt lists"
    rm -rf "$DIR"/usr/share/doc/* "$DIR"/usr/share/man/* "$DIR"/usr/share/info/* \
        "$DIR"/usr/share/lintian "$DIR"/usr/share/linda \
        "$DIR"/var/lib/apt/lists/* "$DIR"/var/cache/apt/*.bin "$DIR"/var/cache/apt/archives/*.deb \
        "$DIR"/var/cache/debconf/*-old "$DIR"/var/log/* "$DIR"/tmp/* "$DIR"/root/.cache
    find "$DIR"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
    # Derived images that apt-get install more packages stay small too.
    mkdir -p "$DIR"/etc/dpkg/dpkg.cfg.d "$DIR"/etc/apt/apt.conf.d
    cat > "$DIR"/etc/dpkg/dpkg.cfg.d/01-sandbox-nodoc <<'CFG'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
CFG
    cat > "$DIR"/etc/apt/apt.conf.d/01-sandbox-slim <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
CFG
    echo "$SUITE $PACKAGES $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$DIR/.sandbox-fleet-complete"
else
    log "reusing cached tree $DIR"
fi

log "importing $IMAGE"
tar --numeric-owner --exclude=./.sandbox-fleet-complete -C "$DIR" -c . \
    | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $SUITE +$PACKAGES" - "$IMAGE" >&2
docker image ls "$IMAGE" >&2
