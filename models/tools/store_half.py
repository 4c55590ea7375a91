"""Store a checkpoint's float weights in half precision; it still computes in f32.

    python -m models.tools.store_half models/shapes/clip models/shapes/blip-caption ...

Rewrites each folder's `model.safetensors` with every f32 tensor as f16 (half the bytes) and
leaves `config.json` saying `"dtype": "float32"`, so that transformers (`dtype="auto"`), the
ONNX exporter and the Rust runtime all load the weights widened back to f32: every consumer
sees the same f32 values, the f16-rounded ones. The shipped `shapes` bundle is stored this way
(`python -m models.train` calls it); the model card measures what the rounding costs.

A tensor whose magnitude does not fit f16 is refused rather than stored as infinity.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

F16_MAX = 65504.0


def store_half(model_dir: Path) -> tuple[int, int]:
    """Rewrite `model_dir/model.safetensors` in f16; returns (bytes before, bytes after)."""
    path = model_dir / "model.safetensors"
    before = path.stat().st_size
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        for name in f.keys():
            t = f.get_tensor(name)
            if t.dtype == torch.float32:
                peak = t.abs().max().item() if t.numel() else 0.0
                if peak > F16_MAX:
                    raise ValueError(f"{path}: {name} reaches {peak:g}, beyond f16")
                t = t.to(torch.float16)
            tensors[name] = t.contiguous()
    save_file(tensors, str(path), metadata=metadata)
    cfg_path = model_dir / "config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("dtype") != "float32":
            cfg["dtype"] = "float32"
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return before, path.stat().st_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="checkpoint folders")
    args = ap.parse_args(argv)
    for d in args.dirs:
        before, after = store_half(d)
        print(f"{d}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
