"""Write the benchmark photos: realistic-sized JPEGs (640x480 and 4000x3000, quality 90, 4:2:0)
with photo-like content (smooth shading, texture, edges, sensor noise), deterministic.

    python benches/make_photos.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def photo(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    sx, sy = x / w, y / h
    img = np.stack(
        [
            150 + 80 * np.sin(6 * sx + 2 * sy) * np.cos(4 * sy),
            120 + 70 * np.cos(5 * sx * sy + 1.0),
            100 + 90 * sy - 40 * sx,
        ],
        axis=-1,
    )
    im = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(w // 40, w // 8))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
        else:
            draw.rectangle([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(radius=max(1, w // 800)))
    arr = np.asarray(im).astype(np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-photos")
    out.mkdir(parents=True, exist_ok=True)
    for (w, h), seed in [((640, 480), 1), ((4000, 3000), 2)]:
        path = out / f"photo_{w}x{h}.jpg"
        if not path.exists():
            photo(w, h, seed).save(path, quality=90)
        print(f"{path} {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
