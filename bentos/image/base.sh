#!/usr/bin/env bash
# The base image of the faceserve bento: Debian bookworm (its python3 is 3.11, the Python of the bento) from
# Debian's own packages, no registry involved: `mmdebstrap` builds the root file system as a tarball, `podman
# import` makes it an image.
#   bentos/image/base.sh [IMAGE [PACKAGES]]   (default faceserve-base:bookworm and the packages below; needs root,
#                                             mmdebstrap, podman)
# The tests' PostgreSQL image is made the same way: base.sh faceserve-postgres:bookworm postgresql-15
# Reproducible: the tarball is a function of this script and of the archive's state, which the InRelease files of
# the three suites name; SOURCE_DATE_EPOCH is the main suite's date, so the same archive gives the same bytes.
# The tarball is cached under ~/.cache/faceserve/image/ by that key: a second build only imports it.
set -euo pipefail
IMAGE=${1:-faceserve-base:bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# python3: the interpreter uv builds the bento's venv from (BentoML's Dockerfile: `uv venv -p 3.11`).
# python3-pip: only for the Dockerfile's `pip install uv` (uv is not packaged in bookworm).
# ca-certificates: TLS to PyPI at build time, and to a PostgreSQL or URL fetch at run time.
# The merged-usr hook makes /bin a link to /usr/bin itself, where the `usrmerge` package would pull in all of perl.
# passwd: the Dockerfile's groupadd/useradd of the `bentoml` user.
# libstdc++6: the C++ runtime the wheels of numpy, onnxruntime and opencv-python-headless link to; beyond it and
# glibc they carry their own libraries (psycopg[binary] its libpq); no libGL: OpenCV is the headless build.
PACKAGES=${2:-python3,python3-pip,ca-certificates,passwd,libstdc++6}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/faceserve/image
mkdir -p "$CACHE"

releases=$(for url in "$MIRROR/dists/$SUITE/InRelease" "$MIRROR/dists/$SUITE-updates/InRelease" \
                      "$SECURITY_MIRROR/dists/$SUITE-security/InRelease"; do
               curl -fsSL --retry 3 "$url" | sed -n '/^Date:/p;/^Version:/p'
           done)
key=$( (cat "$0"; echo "$PACKAGES $releases") | sha256sum | cut -c1-16)
tarball="$CACHE/$SUITE-$key.tar"
if [ ! -s "$tarball" ]; then
    SOURCE_DATE_EPOCH=$(date -d "$(echo "$releases" | sed -n '1s/^Date: //p')" +%s)
    export SOURCE_DATE_EPOCH
    mmdebstrap --variant=essential --format=tar --include="$PACKAGES" \
        --aptopt='APT::Install-Recommends "false"' \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
        "$SUITE" "$tarball.partial" \
        "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main"
    mv "$tarball.partial" "$tarball"
fi
# An imported image has no PATH, no user and no labels of its own.
podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
    --change 'ENV UV_PYTHON_DOWNLOADS=never' \
    --change "LABEL org.opencontainers.image.base.name=debian:$SUITE faceserve.base.key=$key" \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$IMAGE" >/dev/null
echo "$IMAGE from $tarball"
