"""PyTorch side of the CPU model benchmark: the same checkpoints, batch sizes and token counts
as `workers/model/benches/model_cpu.rs`, f32, eager, all cores. Prints items per second."""

import sys
import time
from pathlib import Path

import torch
from transformers import BlipForConditionalGeneration, CLIPModel


def rate(fn, items: int, seconds: float = 20.0, min_iters: int = 3) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * items / (time.perf_counter() - t0)


@torch.inference_mode()
def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-models")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    clip = CLIPModel.from_pretrained(str(root / "clip-vit-b32")).eval()
    for b in (1, 8):
        px = torch.randn(b, 3, 224, 224)
        print(f"clip_b32_cpu/image/batch{b} {rate(lambda: clip.get_image_features(pixel_values=px), b):.2f} items/s", flush=True)
    for b in (1, 32):
        ids = torch.tensor([[49406] + [320 + (i * 14 + j) for j in range(14)] + [49407] for i in range(b)])
        print(f"clip_b32_cpu/text16/batch{b} {rate(lambda: clip.get_text_features(input_ids=ids), b):.2f} items/s", flush=True)
    blip = BlipForConditionalGeneration.from_pretrained(str(root / "blip-base-caption")).eval()
    for b in (1, 4):
        px = torch.randn(b, 3, 384, 384)
        gen = lambda: blip.generate(pixel_values=px, max_new_tokens=20, min_new_tokens=20, do_sample=False)
        print(f"blip_base_caption_cpu/greedy20/batch{b} {rate(gen, b, seconds=30.0):.2f} items/s", flush=True)


if __name__ == "__main__":
    main()
