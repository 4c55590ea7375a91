"""Compare two `fusionstream run` output folders record by record (e.g. a GPU run and a CPU run
of the same events): the same records on every stream, the same texts, numbers within a
tolerance. Timings and wall-clock fields are ignored.

    python benches/gpu/same_outputs.py DIR_A DIR_B [--tol 1e-4]

Prints one line per stream and the largest numeric difference; exits 1 on any mismatch.
"""

import argparse
import json
import sys
from pathlib import Path

STREAMS = ["captions", "answers", "embeddings", "tags", "dead_letters"]
IGNORED = {"timings", "received_at", "failed_at"}


def records(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        key = r.get("event_id") or json.dumps([r["source"]["stream"], r["source"]["partition"], r["source"]["offset"]])
        out[key] = {k: v for k, v in r.items() if k not in IGNORED}
    return out


def diff(a, b, tol: float, where: str, worst: list) -> list[str]:
    """Differences between two JSON values; floats compared within `tol`, the rest exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a)} vs {sorted(b)}"]
        return [d for k in a for d in diff(a[k], b[k], tol, f"{where}.{k}", worst)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, tol, f"{where}[{i}]", worst)]
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            worst[0] = max(worst[0], abs(a - b))
            return [] if abs(a - b) <= tol else [f"{where}: {a} vs {b}"]
    return [] if a == b else [f"{where}: {json.dumps(a)[:80]} vs {json.dumps(b)[:80]}"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--tol", type=float, default=1e-4)
    args = p.parse_args()
    ok = True
    for s in STREAMS:
        ra, rb = records(args.a / f"{s}.jsonl"), records(args.b / f"{s}.jsonl")
        worst = [0.0]
        problems = [f"only in one run: {k}" for k in sorted(set(ra) ^ set(rb))]
        problems += [d for k in sorted(set(ra) & set(rb)) for d in diff(ra[k], rb[k], args.tol, k, worst)]
        ok &= not problems
        print(f"{s}: {len(ra)} vs {len(rb)} records, max numeric diff {worst[0]:.2e}, "
              + ("same" if not problems else f"{len(problems)} differences: " + "; ".join(problems[:5])))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
