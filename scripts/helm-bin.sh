#!/usr/bin/env bash
# Prints the path of the pinned Helm binary, building it once from the Go module proxy into
# $HOME/.cache/fusionstream/bin (helm/test.sh and scripts/test-image.sh use it).
# Usage: helm=$(scripts/helm-bin.sh)
set -euo pipefail
bin="${FUSIONSTREAM_CACHE:-$HOME/.cache/fusionstream}/bin"
helm_version=v3.22.0
helm="$bin/helm-$helm_version"
mkdir -p "$bin"
if [ ! -x "$helm" ]; then
  echo "== building helm $helm_version (once)" >&2
  tmp=$(mktemp -d)
  GOBIN="$tmp" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$helm_version" >&2
  mv "$tmp/helm" "$helm"
  rm -rf "$tmp"
fi
echo "$helm"
