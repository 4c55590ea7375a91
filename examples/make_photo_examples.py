"""The real photos of examples/photos/ and their copies.

    python examples/make_photo_examples.py [--wheel scikit_image-0.26.0-...whl]

Takes five photos out of scikit-image 0.26.0's wheel (skimage/data: each photo's source and
licence in examples/photos/README.md, quoted from skimage/data/_fetchers.py) and makes three
copies of two of them for the near-duplicate example — a crop of 8% off each side (JPEG
quality 85), a half-size version (Lanczos, quality 75), a mirror image (quality 90) — with
Pillow. The wheel is downloaded (no dependencies) into $HOME/.cache/fusionstream/wheels when
not given.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "examples/photos"
PHOTOS = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg"]


def wheel() -> Path:
    cache = Path.home() / ".cache/fusionstream/wheels"
    found = sorted(cache.glob("scikit_image-0.26.0-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "scikit-image==0.26.0", "-d", str(cache)], check=True)
        found = sorted(cache.glob("scikit_image-0.26.0-*.whl"))
    return found[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", type=Path)
    args = ap.parse_args()
    with zipfile.ZipFile(args.wheel or wheel()) as z:
        for name in PHOTOS:
            (OUT / name).write_bytes(z.read(f"skimage/data/{name}"))
    copies = OUT / "copies"
    copies.mkdir(exist_ok=True)
    cat = Image.open(OUT / "chelsea.png").convert("RGB")
    w, h = cat.size
    cat.crop((int(w * 0.08), int(h * 0.08), int(w * 0.92), int(h * 0.92))).save(
        copies / "chelsea-crop.jpg", format="JPEG", quality=85)
    cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        copies / "chelsea-mirror.jpg", format="JPEG", quality=90)
    cup = Image.open(OUT / "coffee.png").convert("RGB")
    cup.resize((cup.width // 2, cup.height // 2), Image.Resampling.LANCZOS).save(
        copies / "coffee-small.jpg", format="JPEG", quality=75)
    print(f"{len(PHOTOS)} photos and 3 copies in {OUT}")


if __name__ == "__main__":
    main()
