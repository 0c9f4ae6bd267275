#!/usr/bin/env bash
# `make image`: the CPU bento as an OCI image, built here with podman from nothing but Debian's and PyPI's packages.
#   bentos/image/build.sh [IMAGE]        (default faceserve:latest; run from anywhere, needs root and the
#                                         repository built: make repository)
# 1. the base image, faceserve-base:bookworm (bentos/image/base.sh);
# 2. `bentoml build` of bentos/cpu/bentofile.yaml into ~/.cache/faceserve/image/bentoml (its Dockerfile comes from
#    bentos/image/Dockerfile.j2 over that base);
# 3. `bentoml containerize --backend podman` with the options this kind of machine needs: runc and ulimits below
#    the hard limits (bentos/image/containers.conf, through CONTAINERS_CONF), host networking (no bridge here),
#    the docker image format (OCI images drop HEALTHCHECK), and, for the installs only, the machine's CA bundle and
#    the uv/pip caches under ~/.cache/faceserve/image/build as a build volume.
set -euo pipefail
IMAGE=${1:-faceserve:latest}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bentos/image"
BIN=${BIN:-$ROOT/.venv/bin}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/faceserve/image
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}
# The bento store lies outside the build context: bentoml build walks the whole of it.
export BENTOML_HOME=${BENTOML_HOME:-$CACHE/bentoml} BENTOML_DO_NOT_TRACK=True
# One build volume (BentoML joins several --opt volume into one argument): the machine's CA bundle and the caches.
mkdir -p "$CACHE/build"
cp "$CA_BUNDLE" "$CACHE/build/ca.crt"

for built in "$ROOT"/model_repository/*/1; do
    # bentoml build packs no file below a linked folder: the image would answer every head as missing
    [ -L "$built" ] && { echo "$built is a link: bentoml build would leave its models out; copy it" >&2; exit 1; }
done
"$HERE/base.sh"
tag=$(cd "$ROOT" && "$BIN/bentoml" build -f bentos/cpu/bentofile.yaml -o tag . 2>/dev/null | sed -n 's/^__tag__://p')
[ -n "$tag" ] || { echo "bentoml build failed: run it by hand for its error" >&2; exit 1; }
# BentoML 1.4 refuses a dockerfile_template outside the working directory or under a hidden folder (~/.cache), and
# containerize reads it from a temporary copy of the bento: that copy must lie under the working directory.
work=$(mktemp -d /tmp/faceserve-image-XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$work" && TMPDIR="$work" "$BIN/bentoml" containerize "$tag" --backend podman --image-tag "$IMAGE" \
    --opt network=host --opt format=docker \
    --opt volume="$CACHE/build:/run/build" \
    --opt build-arg=SSL_CERT_FILE=/run/build/ca.crt --opt build-arg=PIP_CERT=/run/build/ca.crt \
    --opt build-arg=UV_CACHE_DIR=/run/build/uv --opt build-arg=PIP_CACHE_DIR=/run/build/pip \
    --opt build-arg=UV_LINK_MODE=copy)
# Only the newest image of each name is kept; its predecessors' layers would fill the disk build by build.
podman image prune -f >/dev/null
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
echo "$IMAGE (bento $tag): $((size / 1000000)) MB, built in ${SECONDS} s"
