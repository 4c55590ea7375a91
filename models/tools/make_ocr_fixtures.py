"""Images of text and rapidocr's own reading of them, for the Rust OCR pack's parity test.

    python -m models.tools.make_ocr_fixtures [--images]

With --images, renders `models/fixtures/ocr/*.png` first: 32 images of English text in the
DejaVu fonts of Debian's fonts-dejavu-core (sans, serif, mono, condensed; regular, bold,
oblique), 16 to 56 px, one to three lines, on plain, gradient, noisy and textured
backgrounds, upright, tilted by a few degrees, upside down and on their side. The images are
committed (font rendering differs between FreeType versions); the reference is then
`reference.json`: for every image, the lines `rapidocr_onnxruntime.RapidOCR` (the package the
pack's graphs come from, with its default settings) returns — box (4 corners, pixels of the
image), text, score — in its reading order. The Rust pack (`workers/model/src/packs/ocr`)
must read the same strings on at least 95% of the lines, with boxes within a few pixels.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "models/fixtures/ocr"
FONTS = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSerifCondensed-Italic.ttf",
]
PHRASES = [
    "FREE CRYPTO GIVEAWAY",
    "Send 1 BTC, get 2 back",
    "Happy birthday Anna",
    "Party at the park 3 pm",
    "SALE 50% OFF",
    "Call 555 0199 now",
    "Open daily 9 to 5",
    "No parking",
    "Fresh bread",
    "Exit",
    "Meeting moved to Friday",
    "www.example.com",
    "Limited offer",
    "Keep out",
    "Welcome home",
    "Order 12345",
    "Total 42.50",
    "Do not disturb",
    "Lost cat, reward",
    "Quiet please",
    "Vote on Tuesday",
    "Gate B12",
    "Hello world",
    "Verify your account",
]


def background(rng: random.Random, w: int, h: int, kind: str) -> Image.Image:
    if kind == "plain":
        c = tuple(rng.randint(200, 255) for _ in range(3))
        return Image.new("RGB", (w, h), c)
    if kind == "dark":
        c = tuple(rng.randint(0, 70) for _ in range(3))
        return Image.new("RGB", (w, h), c)
    if kind == "gradient":
        a = np.array([rng.randint(150, 255) for _ in range(3)], np.float32)
        b = np.array([rng.randint(150, 255) for _ in range(3)], np.float32)
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        arr = a * (1 - t) + b * t
        return Image.fromarray(np.broadcast_to(arr, (h, w, 3)).astype(np.uint8))
    if kind == "noise":
        nrng = np.random.default_rng(rng.randint(0, 1 << 30))
        arr = 215 + nrng.normal(0, 12, (h, w, 3))
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    # texture: blurred blobs
    nrng = np.random.default_rng(rng.randint(0, 1 << 30))
    small = nrng.integers(150, 255, (max(2, h // 16), max(2, w // 16), 3)).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).filter(
        ImageFilter.GaussianBlur(3)
    )


def render(rng: random.Random, i: int) -> Image.Image:
    font = ImageFont.truetype(str(FONTS / FONT_FILES[i % len(FONT_FILES)]), rng.choice([16, 20, 24, 30, 38, 48, 56]))
    lines = rng.sample(PHRASES, rng.choice([1, 1, 2, 3]))
    size = font.size
    widths = [int(font.getlength(line)) for line in lines]
    pad = max(12, size // 2)
    w = max(widths) + 2 * pad + rng.randint(0, 80)
    h = len(lines) * int(size * 1.6) + 2 * pad
    kind = ["plain", "gradient", "noise", "texture", "dark"][i % 5]
    img = background(rng, w, h, kind)
    d = ImageDraw.Draw(img)
    fg = (rng.randint(200, 255),) * 3 if kind == "dark" else tuple(rng.randint(0, 80) for _ in range(3))
    x0 = pad + rng.randint(0, 40)
    for k, line in enumerate(lines):
        d.text((x0, pad + k * int(size * 1.6)), line, font=font, fill=fg)
    turn = [0, 0, 0, 3, -4, 8, -7, 180, 90, 0, 2, 0][i % 12]
    if turn in (90, 180):
        img = img.rotate(turn, expand=True)
    elif turn:
        fill = img.getpixel((0, 0))
        img = img.rotate(turn, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
    return img


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", action="store_true", help="render the images first")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.images:
        rng = random.Random(20261201)
        for i in range(32):
            render(rng, i).save(OUT / f"text{i:02d}.png")
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    images = {}
    for path in sorted(OUT.glob("*.png")):
        result, _ = engine(str(path))
        images[path.name] = [
            {"box": [[float(x), float(y)] for x, y in box], "text": text, "score": float(score)}
            for box, text, score in (result or [])
        ]
    ref = {
        "generator": "models/tools/make_ocr_fixtures.py",
        "reference": "rapidocr-onnxruntime 1.4.4, default settings",
        "images": images,
    }
    (OUT / "reference.json").write_text(json.dumps(ref, ensure_ascii=False, indent=1) + "\n")
    lines = sum(len(v) for v in images.values())
    print(f"wrote {OUT / 'reference.json'}: {len(images)} images, {lines} lines")


if __name__ == "__main__":
    main()
