#!/usr/bin/env bash
# Fetch, on the host, the Debian packages an image adds on top of its parent image, for `dpkg -i`
# inside `docker build` (whose RUN steps have no route to a package mirror).
#
#   fetch-debs.sh PARENT_IMAGE DEST PACKAGE...
#
# A PACKAGE written only:NAME is downloaded alone, without its dependencies, into DEST/only/ (for an
# image that takes files out of a package, e.g. novnc's static pages, without installing it).
#
# apt resolves the packages against the parent image's own dpkg status (read from the image), with a
# private apt configuration that sees only Debian's bookworm, bookworm-updates and bookworm-security
# (never the host's other sources, such as a nodesource nodejs), so DEST gets exactly the .debs the
# image lacks, dependencies included, recommends excluded. Package lists and .debs are cached; DEST
# is refilled only when the package list or the parent image changed.
#
# Environment:
#   DEBIAN_MIRROR        mirror                      (default http://deb.debian.org/debian)
#   DEBIAN_SECURITY      security mirror             (default http://deb.debian.org/debian-security)
#   SANDBOX_FLEET_CACHE  cache folder                (default ~/.cache/sandbox-fleet)
#   APT_LISTS_MAX_AGE    seconds before the package lists are refreshed (default 86400)
set -euo pipefail

[ $# -ge 3 ] || { echo "usage: $0 PARENT_IMAGE DEST PACKAGE..." >&2; exit 2; }
PARENT=$1 DEST=$2
shift 2
PACKAGES=() ONLY=()
for arg in "$@"; do
    case $arg in
        only:*) ONLY+=("${arg#only:}") ;;
        *) PACKAGES+=("$arg") ;;
    esac
done
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
CACHE=${SANDBOX_FLEET_CACHE:-${HOME:-/root}/.cache/sandbox-fleet}/apt
MAX_AGE=${APT_LISTS_MAX_AGE:-86400}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf '[fetch-debs] %s\n' "$*" >&2; }

command -v apt-get >/dev/null || { log "apt-get is needed on the host"; exit 1; }
[ -r "$KEYRING" ] || { log "$KEYRING is missing: apt-get install debian-archive-keyring"; exit 1; }

parent_id=$(docker image inspect -f '{{.Id}}' "$PARENT")
stamp="$(printf '%s\n' "$parent_id" "$MIRROR" "$@" | sha256sum | cut -c1-16)"
if [ -f "$DEST/.stamp" ] && [ "$(cat "$DEST/.stamp")" = "$stamp" ]; then
    log "$(find "$DEST" -name '*.deb' | wc -l) .debs for ${PACKAGES[*]} are cached in $DEST"
    exit 0
fi

mkdir -p "$CACHE"/{lists/partial,archives/partial,etc/sources.list.d,etc/preferences.d,etc/apt.conf.d}
cat > "$CACHE/etc/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR bookworm main
deb [signed-by=$KEYRING] $MIRROR bookworm-updates main
deb [signed-by=$KEYRING] $SECURITY bookworm-security main
EOF
# The parent image's installed packages are what apt resolves against.
status="$CACHE/status.$$"
trap 'rm -f "$status"' EXIT
docker run --rm --network none --entrypoint cat "$PARENT" /var/lib/dpkg/status > "$status"

apt=(apt-get -q
     -o "Dir::Etc::SourceList=$CACHE/etc/sources.list"
     -o "Dir::Etc::SourceParts=$CACHE/etc/sources.list.d"
     -o "Dir::Etc::PreferencesParts=$CACHE/etc/preferences.d"
     -o "Dir::Etc::Preferences=$CACHE/etc/preferences"
     -o "Dir::Etc::Parts=$CACHE/etc/apt.conf.d"
     -o "Dir::State::Lists=$CACHE/lists"
     -o "Dir::State::status=$status"
     -o "Dir::Cache=$CACHE"
     -o "Dir::Cache::archives=$CACHE/archives"
     -o "APT::Install-Recommends=false"
     -o "APT::Install-Suggests=false"
     -o "APT::Sandbox::User=root"
     -o "Debug::NoLocking=true")

lists_age=$(( $(date +%s) - $(stat -c %Y "$CACHE/lists/.updated" 2>/dev/null || echo 0) ))
if [ "$lists_age" -gt "$MAX_AGE" ]; then
    log "apt-get update (bookworm, bookworm-updates, bookworm-security) into $CACHE/lists"
    "${apt[@]}" update >&2
    touch "$CACHE/lists/.updated"
fi

log "resolving ${PACKAGES[*]} against $PARENT"
# --print-uris lists what an install would fetch, less what the archives folder holds: point it at an
# empty one to get the whole list; download-only then fills (or reuses) the cache.
empty="$CACHE/empty.$$"
mkdir -p "$empty/partial"
trap 'rm -rf "$status" "$empty"' EXIT
uris=$("${apt[@]}" -o "Dir::Cache::archives=$empty" install -y --print-uris "${PACKAGES[@]}" \
       | sed -n "s/^'\([^']*\)' \([^ ]*\) .*/\1 \2/p")
"${apt[@]}" install -y --download-only "${PACKAGES[@]}" >&2

rm -rf "$DEST"
mkdir -p "$DEST"
count=0
while read -r _uri file; do
    [ -n "$file" ] || continue
    ln "$CACHE/archives/$file" "$DEST/$file" 2>/dev/null || cp "$CACHE/archives/$file" "$DEST/$file"
    count=$((count + 1))
done <<< "$uris"
if [ ${#ONLY[@]} -gt 0 ]; then
    mkdir -p "$DEST/only"
    (cd "$DEST/only" && "${apt[@]}" download "${ONLY[@]}" >&2)
    count=$((count + ${#ONLY[@]}))
fi
echo "$stamp" > "$DEST/.stamp"
log "$count .debs in $DEST ($(du -sh "$DEST" | cut -f1))"
