#!/usr/bin/env bash
# Prints the path of a pinned Go tool, building it once from the Go module proxy into
# $HOME/.cache/fusionstream/bin/NAME-VERSION (scripts/helm-bin.sh, scripts/registry-bin.sh).
# Usage: scripts/go-bin.sh NAME PACKAGE VERSION [LDFLAGS]
set -euo pipefail
name=$1 package=$2 version=$3 ldflags=${4:-}
bin="${FUSIONSTREAM_CACHE:-$HOME/.cache/fusionstream}/bin"
tool="$bin/$name-$version"
if [[ ! -x $tool ]]; then
  echo "== building $name $version (once)" >&2
  tmp=$(mktemp -d)
  GOBIN="$tmp" GOFLAGS=-mod=mod CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
    "$package@$version" >&2
  mkdir -p "$bin" && mv "$tmp/$(basename "$package")" "$tool" && rm -rf "$tmp"
fi
echo "$tool"
