"""The tag heads' fitting and threshold rule (models/tags.py) on synthetic features, the
token head's tables against the linear head they store, and the bundle.toml writer on a copy
of the shipped bundle's manifest."""

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


def synthetic_rows(n: int, seed: int, rows: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of `rows` rows each; label 0 shows on one random row's axis 0, label 1 on
    another row's axis 1 (a shape on one patch, a word at one place), label 2 nowhere."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand((n, 3), generator=g) < 0.4).float()
    x = torch.randn((n, rows, 8), generator=g) * 0.3
    for label in (0, 1):
        at = torch.randint(0, rows, (n,), generator=g)
        x[torch.arange(n), at, label] += 2 * y[:, label]
    return x, y


def test_a_max_head_finds_the_row_that_shows_a_label():
    x, y = synthetic_rows(2000, 1)
    for soft in (0, tags.MAX_HEAD_STEPS // 2):
        w, b = tags.fit_max_head(x, y, soft_steps=soft)
        head = {"image.weight": w, "image.bias": b}
        xt, yt = synthetic_rows(1000, 2)
        p = tags.scores(xt, head, "image", "caption_patches")
        for j in (0, 1):
            assert tags.f1(p[:, j] >= 0.5, yt[:, j] > 0.5) > 0.95, (soft, j)
        # The mean over rows dilutes a one-row signal: the same labels read off the mean
        # are much worse (the reason image tags read patches, not a pooled embedding).
        wm, bm = tags.fit_head(x.mean(1), y)
        pm = tags.scores(xt.mean(1), {"image.weight": wm, "image.bias": bm}, "image")
        assert tags.f1(pm[:, 0] >= 0.5, yt[:, 0] > 0.5) < tags.f1(p[:, 0] >= 0.5, yt[:, 0] > 0.5)


def test_token_tables_score_as_the_linear_head_on_the_input_embeddings():
    bundle = ROOT / "models/shapes"
    feats = tags.Features(bundle)
    texts = ["a small red circle", "two shapes : blue star and white cross", "a large purple hexagon on the left"]
    ids = feats.text(texts, "tokens")
    x, mask = feats.token_inputs(ids)
    emb = feats.clip.text_model.embeddings
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(2, x.shape[-1], generator=g), torch.randn(2, generator=g)
    with torch.no_grad():
        head = {"text.token": emb.token_embedding.weight @ w.T,
                "text.position": emb.position_embedding.weight @ w.T, "text.bias": b}
        want = torch.sigmoid(tags.max_logits(x, w, mask) + b)
    got = tags.scores(ids, head, "text", "tokens")
    assert got.shape == (3, 2)
    assert torch.allclose(got, want, atol=1e-5), (got, want)


def test_write_sets_the_head_and_a_threshold_per_label(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    shutil.copy(ROOT / "models/shapes/bundle.toml", bundle / "bundle.toml")
    labels = tomllib.loads((bundle / "bundle.toml").read_text())["tags"]["labels"]
    n = len(labels)
    head = {f"{s}.{k}": torch.zeros((n, 4) if k == "weight" else (n,))
            for s in ("image", "text") for k in ("weight", "bias")}
    ths = {"image": {"source": "caption_patches", "threshold": [0.5] * n},
           "text": {"source": "embedding", "threshold": [2.0] * n}}
    for _ in range(2):  # rewriting replaces, never duplicates
        tags.write(bundle, head, ths)
    text = (bundle / "bundle.toml").read_text()
    spec = tomllib.loads(text)
    assert spec["tags"]["head"] == "tags/head.safetensors"
    assert spec["tags"]["image"]["threshold"] == [0.5] * n
    assert spec["tags"]["text"]["threshold"] == [2.0] * n
    assert (spec["tags"]["image"]["source"], spec["tags"]["text"]["source"]) == ("caption_patches", "embedding")
    assert text.count("source =") == 2
    assert "threshold" not in {k for k, v in spec["tags"].items() if not isinstance(v, dict)}
    assert text.count("[tags.image]") == 1 and text.count("head =") == 1
    assert spec["generation"] and spec["clip"]["path"] == "clip"
    assert (bundle / "tags/head.safetensors").exists()
