"""PyTorch side of the CPU model benchmark: the same checkpoints, batch sizes, token counts and
timing protocol as `workers/model/examples/backend_bench.rs` (one warm-up call, then calls for
at least SECONDS and 2 calls), f32, eager. Prints items per second.

    python benches/model_cpu_torch.py MODELS_DIR [--batches 1,8,32] [--caption-batches 1,8,32] [--seconds 10]
"""

import argparse
import time
from pathlib import Path

import torch
from transformers import BlipForConditionalGeneration, CLIPModel


def rate(fn, items: int, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * items / (time.perf_counter() - t0)


def pooled(x):
    return x.pooler_output if hasattr(x, "pooler_output") else x


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default="target/bench-models")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--caption-batches", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    root = Path(a.root)
    batches = [int(b) for b in a.batches.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    clip = CLIPModel.from_pretrained(str(root / "clip-vit-b32")).eval()
    for b in batches:
        px = torch.randn(b, 3, 224, 224)
        r = rate(lambda: pooled(clip.get_image_features(pixel_values=px)), b, a.seconds)
        print(f"pytorch clip_b32_cpu/image/batch{b} {r:.2f} items/s", flush=True)
    for b in batches:
        ids = torch.tensor([[49406] + [320 + (i * 14 + j) for j in range(14)] + [49407] for i in range(b)])
        r = rate(lambda: pooled(clip.get_text_features(input_ids=ids)), b, a.seconds)
        print(f"pytorch clip_b32_cpu/text16/batch{b} {r:.2f} items/s", flush=True)
    del clip
    blip = BlipForConditionalGeneration.from_pretrained(str(root / "blip-base-caption")).eval()
    for b in [int(b) for b in a.caption_batches.split(",")]:
        px = torch.randn(b, 3, 384, 384)
        gen = lambda: blip.generate(pixel_values=px, max_new_tokens=20, min_new_tokens=20, do_sample=False)
        print(f"pytorch blip_base_caption_cpu/greedy20/batch{b} {rate(gen, b, a.seconds):.2f} items/s", flush=True)


if __name__ == "__main__":
    main()
