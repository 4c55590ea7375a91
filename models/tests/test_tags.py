"""The tag head's fitting and threshold rule (models/tags.py) on synthetic embeddings, and
its bundle.toml writer on a copy of the shipped bundle's manifest."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import torch

from models import tags

ROOT = Path(__file__).resolve().parents[2]


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Label 0 is read off axis 0, label 1 off axis 1, label 2 is noise."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand((n, 3), generator=g) < 0.4).float()
    x = torch.randn((n, 8), generator=g) * 0.3
    x[:, 0] += 2 * y[:, 0]
    x[:, 1] += 2 * y[:, 1]
    return x, y


def test_thresholds_keep_precision_and_noise_labels_never_fire():
    x, y = synthetic(3000, 1)
    w, b = tags.fit_head(x, y)
    head = {"image.weight": w, "image.bias": b}
    xv, yv = synthetic(2000, 2)
    p = tags.scores(xv, head, "image")
    ths = [tags.pick_threshold(p[:, j], yv[:, j] > 0.5, 0.8) for j in range(3)]
    assert ths[2] == 2.0, ths  # no signal: no threshold reaches precision 0.8
    xt, yt = synthetic(2000, 3)
    pred = tags.scores(xt, head, "image") >= torch.tensor(ths)
    rep = tags.report(pred, yt > 0.5, ["a", "b", "c"])
    assert rep["micro"]["precision"] >= 0.95, rep
    assert not pred[:, 2].any()
    for j in (0, 1):
        assert tags.f1(pred[:, j], yt[:, j] > 0.5) > 0.95


def test_write_sets_the_head_and_a_threshold_per_label(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    shutil.copy(ROOT / "models/shapes/bundle.toml", bundle / "bundle.toml")
    labels = tomllib.loads((bundle / "bundle.toml").read_text())["tags"]["labels"]
    n = len(labels)
    head = {f"{s}.{k}": torch.zeros((n, 4) if k == "weight" else (n,))
            for s in ("image", "text") for k in ("weight", "bias")}
    ths = {"image": [0.5] * n, "text": [2.0] * n}
    for _ in range(2):  # rewriting replaces, never duplicates
        tags.write(bundle, head, ths)
    text = (bundle / "bundle.toml").read_text()
    spec = tomllib.loads(text)
    assert spec["tags"]["head"] == "tags/head.safetensors"
    assert spec["tags"]["image"]["threshold"] == [0.5] * n
    assert spec["tags"]["text"]["threshold"] == [2.0] * n
    assert "threshold" not in {k for k, v in spec["tags"].items() if not isinstance(v, dict)}
    assert text.count("[tags.image]") == 1 and text.count("head =") == 1
    assert spec["generation"] and spec["clip"]["path"] == "clip"
    assert (bundle / "tags/head.safetensors").exists()
