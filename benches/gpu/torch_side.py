"""PyTorch side of the GPU model comparison (`benches/gpu/run.sh`): the same checkpoints, inputs,
batch sizes and timing protocol as `workers/model/examples/model_bench.rs`, in transformers eager.

    python benches/gpu/torch_side.py bench --models DIR [--device cuda] [--dtype f16] [--quick]
    python benches/gpu/torch_side.py check --models DIR [--device cuda] --out FILE

`bench` prints one JSON line per measurement (median of timed calls after a warm-up, each call
followed by torch.cuda.synchronize). `check` runs f32 (TF32 off) on the deterministic inputs,
one row at a time, and writes embeddings and greedy caption ids for `compare.py`.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import BlipForConditionalGeneration, CLIPModel

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def pixels(b: int, size: int) -> torch.Tensor:
    """The formula of model_bench.rs `pixels`: exactly representable, the same on both sides."""
    n = torch.arange(b).view(b, 1, 1, 1)
    c = torch.arange(3).view(1, 3, 1, 1)
    y = torch.arange(size).view(1, 1, size, 1)
    x = torch.arange(size).view(1, 1, 1, size)
    v = (n * 31 + c * 17 + y * 3 + x * 5) % 251
    return v.to(torch.float32) / 125.0 - 1.0


def text_ids(b: int, length) -> list[list[int]]:
    """The formula of model_bench.rs `text_ids`: BOS, word ids, EOS."""
    return [[49406] + [320 + (i * 30 + j) % 4000 for j in range(length(i) - 2)] + [49407] for i in range(b)]


def feats(e) -> torch.Tensor:
    return getattr(e, "pooler_output", e)


def sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def median_secs(dev: str, warm: int, iters: int, fn) -> float:
    for _ in range(warm):
        fn()
    sync(dev)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def report(a, name: str, batch: int, secs: float) -> None:
    print(json.dumps({"side": "torch", "name": name, "batch": batch, "device": a.device, "dtype": a.dtype,
                      "median_ms": secs * 1e3, "items_per_s": batch / secs}), flush=True)


@torch.inference_mode()
def bench(a) -> None:
    dev, dt = a.device, DTYPES[a.dtype]
    image_batches, text_batch, caption_batches = ([1, 2], 4, [1, 2]) if a.quick else ([1, 32, 256], 256, [1, 32, 128])
    warm, iters = (1, 3) if a.quick else (5, 20)
    for name, folder in [("clip_b32", "clip-vit-b32"), ("clip_b16", "clip-vit-b16")]:
        m = CLIPModel.from_pretrained(str(a.models / folder)).to(dev, dt).eval()
        for b in image_batches:
            px = pixels(b, 224).to(dev, dt)
            s = median_secs(dev, warm, iters, lambda: torch.nn.functional.normalize(
                feats(m.get_image_features(pixel_values=px)), dim=-1))
            report(a, f"{name}/image", b, s)
        if name == "clip_b16":
            ids = torch.tensor(text_ids(text_batch, lambda i: 32), device=dev)
            s = median_secs(dev, warm, iters, lambda: torch.nn.functional.normalize(
                feats(m.get_text_features(input_ids=ids)), dim=-1))
            report(a, "clip/text32", text_batch, s)
        del m
    m = BlipForConditionalGeneration.from_pretrained(str(a.models / "blip-base-caption")).to(dev, dt).eval()
    size = m.config.vision_config.image_size
    for b in caption_batches:
        px = pixels(b, size).to(dev, dt)
        s = median_secs(dev, 2, 2 if a.quick else 5, lambda: m.generate(
            pixel_values=px, max_new_tokens=20, min_new_tokens=20, do_sample=False, num_beams=1))
        report(a, "blip_base/caption_greedy20", b, s)


@torch.inference_mode()
def check(a) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = a.device
    out = {}
    for name, folder in [("clip_b32", "clip-vit-b32"), ("clip_b16", "clip-vit-b16")]:
        m = CLIPModel.from_pretrained(str(a.models / folder)).to(dev).eval()
        px = pixels(4, 224).to(dev)
        img = [torch.nn.functional.normalize(feats(m.get_image_features(pixel_values=px[i:i + 1])), dim=-1)[0]
               for i in range(4)]
        out[f"{name}/image"] = torch.stack(img).cpu().tolist()
        txt = [torch.nn.functional.normalize(feats(m.get_text_features(input_ids=torch.tensor([ids], device=dev))),
                                             dim=-1)[0] for ids in text_ids(4, lambda i: 8 + 5 * i)]
        out[f"{name}/text"] = torch.stack(txt).cpu().tolist()
        del m
    m = BlipForConditionalGeneration.from_pretrained(str(a.models / "blip-base-caption")).to(dev).eval()
    px = pixels(4, m.config.vision_config.image_size).to(dev)
    out["blip_base/caption_greedy_ids"] = [
        m.generate(pixel_values=px[i:i + 1], max_new_tokens=20, do_sample=False, num_beams=1)[0].tolist()
        for i in range(4)]
    Path(a.out).write_text(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["bench", "check"])
    p.add_argument("--models", type=Path, default=Path("target/bench-models"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    a = p.parse_args()
    print(f"# torch {torch.__version__}" + (f", {torch.cuda.get_device_name(0)}" if a.device.startswith("cuda") else
                                           f", {torch.get_num_threads()} threads"), flush=True)
    if a.mode == "check":
        if not a.out:
            p.error("check needs --out FILE")
        check(a)
    else:
        bench(a)


if __name__ == "__main__":
    main()
