#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test (unit, parity, pipeline, CLI, and
# the Kafka tests against a real broker that scripts/dev-services.sh installs and starts), and
# the Helm chart's checks (helm/test.sh).
# Usage: scripts/test.sh            (from anywhere; the cargo target dir is cached)
#        FUSIONSTREAM_SKIP_SERVICES=1 scripts/test.sh   (no services: the Kafka tests skip)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Real services for the Kafka tests (installed and cached on first use), stopped at the end.
if [[ "${FUSIONSTREAM_SKIP_SERVICES:-0}" != "1" ]]; then
  echo "== scripts/dev-services.sh up"
  eval "$(scripts/dev-services.sh up)"
  export FUSIONSTREAM_REQUIRE_SERVICES=1
  stop_services() { scripts/dev-services.sh down || true; }
else
  stop_services() { :; }
fi
log=$(mktemp)
trap 'rm -f "$log"; stop_services' EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "== helm/test.sh (chart lint, rendered manifests against the Kubernetes API types)"
helm/test.sh || status=1
passed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -oE '; [0-9]+ failed' "$log" | awk '{s += $2} END {print s + 0}')
echo "tests: $passed passed, $failed failed"
exit "$status"
