"""Side-by-side table of `model_bench` (candle) and `torch_side.py` (PyTorch) results.

    python benches/gpu/compare.py --bench candle.jsonl torch.jsonl [--check candle.json torch.json]
                                  [--tol 1e-4] [--markdown OUT.md]

Bench: one row per (model/task, batch) with both rates and candle ÷ PyTorch. Check: per output
the max abs difference of embeddings (pass when ≤ tol) and whether greedy caption ids are
identical. Exits 1 when a check fails or a side is missing a row, so a run script can stop.
"""

import argparse
import json
import sys


def load_lines(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def bench_table(candle: list[dict], torch: list[dict]) -> tuple[list[str], bool]:
    t = {(r["name"], r["batch"]): r for r in torch}
    c = {(r["name"], r["batch"]): r for r in candle}
    ok = set(t) == set(c)
    lines = ["| model / task | batch | candle items/s | PyTorch items/s | candle ÷ PyTorch |", "|---|---:|---:|---:|---:|"]
    for key in sorted(set(t) | set(c), key=lambda k: (k[0], k[1])):
        cr, tr = c.get(key), t.get(key)
        cv = f"{cr['items_per_s']:,.1f}" if cr else "missing"
        tv = f"{tr['items_per_s']:,.1f}" if tr else "missing"
        ratio = f"{cr['items_per_s'] / tr['items_per_s']:.2f}×" if cr and tr else "—"
        lines.append(f"| {key[0]} | {key[1]} | {cv} | {tv} | {ratio} |")
    return lines, ok


def check_table(candle: dict, torch: dict, tol: float) -> tuple[list[str], bool]:
    lines = ["| output | compared | result |", "|---|---|---|"]
    ok = True
    for key in sorted(set(candle) | set(torch)):
        if key not in candle or key not in torch:
            lines.append(f"| {key} | missing on one side | FAIL |")
            ok = False
            continue
        a, b = candle[key], torch[key]
        if key.endswith("_ids"):
            same = a == b
            ok &= same
            lines.append(f"| {key} | {len(a)} rows of token ids | {'identical' if same else 'DIFFERENT: ' + json.dumps([a, b])[:300]} |")
            continue
        if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
            lines.append(f"| {key} | shapes differ | FAIL |")
            ok = False
            continue
        diff = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
        good = diff <= tol
        ok &= good
        lines.append(f"| {key} | {len(a)}×{len(a[0])} max abs diff {diff:.2e} (tol {tol:g}) | {'pass' if good else 'FAIL'} |")
    return lines, ok


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bench", nargs=2, metavar=("CANDLE", "TORCH"))
    p.add_argument("--check", nargs=2, metavar=("CANDLE", "TORCH"))
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--markdown")
    a = p.parse_args()
    out, ok = [], True
    if a.check:
        lines, good = check_table(*(json.load(open(f)) for f in a.check), a.tol)
        out += ["Parity (f32, same checkpoints and inputs; PyTorch one row at a time, candle batched):", ""] + lines + [""]
        ok &= good
    if a.bench:
        lines, good = bench_table(*(load_lines(f) for f in a.bench))
        out += ["Throughput (median of timed calls after warm-up, synchronised):", ""] + lines + [""]
        ok &= good
    text = "\n".join(out)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
