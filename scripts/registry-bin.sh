#!/usr/bin/env bash
# Prints the path of the pinned CNCF Distribution registry (scripts/test-image.sh pushes the
# image to it), built once (scripts/go-bin.sh).
# Usage: registry=$(scripts/registry-bin.sh)
set -euo pipefail
exec "$(dirname "$0")/go-bin.sh" registry github.com/distribution/distribution/v3/cmd/registry v3.0.0
