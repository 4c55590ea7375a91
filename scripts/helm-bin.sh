#!/usr/bin/env bash
# Prints the path of the pinned Helm binary, built once (scripts/go-bin.sh; helm/test.sh,
# helm/test-cluster.sh and scripts/test-image.sh use it). Helm 4 (server-side apply, kstatus
# waits); the version is stamped into the binary so `helm version` names it.
# Usage: helm=$(scripts/helm-bin.sh)
set -euo pipefail
version=v4.3.2
exec "$(dirname "$0")/go-bin.sh" helm helm.sh/helm/v4/cmd/helm "$version" \
  "-X helm.sh/helm/v4/internal/version.version=$version"
