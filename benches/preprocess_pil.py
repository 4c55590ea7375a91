"""PIL side of the preprocessing benchmark: decode + resize + crop + normalise to CLIP's 224x224,
one core, on the same files as the Rust criterion bench (`benches/compare_preprocess.sh`).

Three variants: transformers' PIL-backend CLIPImageProcessor (what a Python worker would
call), the same steps in plain PIL + numpy, and plain PIL with `draft()` (reduced DCT scale).
Prints one line per file and variant: images per second.
"""

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def plain(data: bytes, draft: bool) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    if draft:
        w, h = im.size
        s = 224 / min(w, h)
        im.draft("RGB", (int(w * s), int(h * s)))
    im = im.convert("RGB")
    w, h = im.size
    s = 224 / min(w, h)
    im = im.resize((max(224, int(w * s)), max(224, int(h * s))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    a = np.asarray(im, dtype=np.float32) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def bench(fn, data: bytes, seconds: float = 3.0) -> float:
    fn(data)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(data)
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-photos")
    variants = {"pil": lambda d: plain(d, False), "pil_draft": lambda d: plain(d, True)}
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        proc = CLIPImageProcessorPil()
        variants["hf_clip_processor"] = lambda d: proc(Image.open(io.BytesIO(d)), return_tensors="np")
    except ImportError:
        pass
    for path in sorted(folder.glob("photo_*.jpg")):
        data = path.read_bytes()
        for name, fn in variants.items():
            print(f"{path.stem} {name} {bench(fn, data):.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
