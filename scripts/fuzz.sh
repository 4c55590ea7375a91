#!/usr/bin/env bash
# Fuzz the paths that read untrusted input with cargo fuzz (libFuzzer, Rust nightly):
#
#   event_decoder      event payloads (core/event.rs)
#   image_preprocess   image decode + resize with the limits on (model/preprocess)
#   tokenizer          text into the bundle's tokenizer (model/tokenize.rs)
#   checkpoint_reader  safetensors checkpoints, preprocessor configs, position checkpoints
#   config_loader      configuration files (a larger build: the worker crate with Kafka and S3)
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 300 s, every target)
#        scripts/fuzz.sh build   (compile the default targets only: scripts/test.sh starts it
#                                 early, in the background)
#        scripts/fuzz.sh 12 event_decoder image_preprocess tokenizer checkpoint_reader
#                                                            (what scripts/test.sh runs)
# Seeds come from the repository (examples, bundle files); the growing corpus is cached
# under $HOME/.cache/fusionstream/fuzz-corpus/. A crash fails the script and leaves its input
# in fuzz/artifacts/TARGET/: fix the bug, keep the input in fuzz/regressions/TARGET/ (every
# run replays those first) and add a unit test of the fix in the crate that had the bug.
# Sanitizer: none (`-s none`): the code under test is safe Rust, and findings are panics,
# aborts, timeouts and memory blow-ups, which libFuzzer catches without one.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FUSIONSTREAM_CACHE:-$HOME/.cache/fusionstream}"
export PATH="$CACHE/tools/bin:$PATH"
export CARGO_TARGET_DIR="$CACHE/fuzz-target"
CARGO_FUZZ_VERSION=0.13.2
seconds="${1:-300}"
shift || true
build_only=0
if [[ $seconds == build ]]; then
  build_only=1
  seconds=0
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(event_decoder image_preprocess tokenizer checkpoint_reader hash_list embedding_list config_loader)
fi

log() { echo "fuzz: $*" >&2; }

if ! rustup toolchain list | grep -q '^nightly'; then
  log "needs the nightly toolchain (rustup toolchain install nightly)"
  exit 1
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $CACHE/tools"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$CACHE/tools" >&2
fi

seed() { # target dir: copy the repository's seeds for `target` into `dir`
  local t=$1 d=$2 i=0
  mkdir -p "$d"
  case $t in
    event_decoder)
      cat examples/events/*.jsonl |
        while IFS= read -r line; do
          [[ -n $line ]] && printf '%s' "$line" > "$d/seed-$((i++))"
        done
      cp schemas/v1/examples/event/* schemas/v1/examples/event-invalid/* "$d/" 2>/dev/null || true ;;
    image_preprocess) find examples/media -maxdepth 1 -type f -exec cp {} "$d/" \; ;;
    tokenizer)
      cat examples/events/*.jsonl | grep -oE '"(text|question)": *"[^"]*"' |
        while IFS= read -r line; do printf '%s' "${line#*: \"}" > "$d/seed-$((i++))"; done ;;
    checkpoint_reader)
      for f in models/fixtures/tiny/fusion-*/model.safetensors models/shapes/fusion/model.safetensors; do
        cp "$f" "$d/$(echo "$f" | tr / _)"
      done
      cp models/shapes/clip/preprocessor_config.json "$d/preprocessor_config.json"
      printf '{"version":1,"positions":{"events.jsonl":42}}' > "$d/checkpoint.json" ;;
    hash_list)
      printf '# seed\n%s item-1 a label\n%s\titem-2\n' "$(printf 'a%.0s' {1..64})" \
        "8a66ca6fc473470cfdcc199b38e799669427c79c7d99e9986999099c2a660663" > "$d/seed-list" ;;
    embedding_list)
      printf '# seed\n{"item": "a", "label": "x", "embedding": [0.6, 0.8]}\n{"event_id": "b", "image_embedding": [1, 0]}\n' > "$d/seed-list" ;;
    config_loader) cp config/default.toml "$d/default.toml" ;;
  esac
}

if [[ $build_only == 1 ]]; then
  # Every target without a feature: the same build `cargo fuzz run -O -s none` then reuses.
  exec cargo +nightly fuzz build -O -s none
fi

status=0
for t in "${targets[@]}"; do
  features=()
  [[ $t == config_loader ]] && features=(--features config)
  corpus="$CACHE/fuzz-corpus/$t"
  seed "$t" "$corpus"
  # Known findings first: each must now pass.
  if compgen -G "fuzz/regressions/$t/*" > /dev/null; then
    log "$t: replaying fuzz/regressions/$t"
    cargo +nightly fuzz run "${features[@]}" -O -s none "$t" fuzz/regressions/"$t"/* -- -runs=0 >&2 ||
      status=1
  fi
  log "$t: ${seconds}s"
  if ! cargo +nightly fuzz run "${features[@]}" -O -s none "$t" "$corpus" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=262144 -timeout=10 \
      -print_final_stats=1 2> "$CACHE/fuzz-$t.log"; then
    tail -40 "$CACHE/fuzz-$t.log" >&2
    log "$t: FAILED (input in fuzz/artifacts/$t/)"
    status=1
  else
    grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$CACHE/fuzz-$t.log" | tail -2 >&2 || true
  fi
done
exit "$status"
