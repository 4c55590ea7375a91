"""Tags as a multi-label decision: a small calibrated head and per-label thresholds.

A scene holds several shapes and colours at once, so a tag is one yes/no decision per label,
not a softmax over all labels. The bundle's tag head is one logistic regression per label on
the CLIP embedding, for each source (the image's embedding; a text-only event's text
embedding): `score = sigmoid(w_label . e + b_label)`, and a label is a tag when its score
reaches the label's threshold. The head is fitted on a calibration split (seed `--seed`); each
threshold is then chosen on a second split (`--threshold-seed`) as the one of best F1 among
those whose precision reaches `--min-precision`, and a label that reaches it nowhere is never
emitted (threshold 2: a sigmoid never gets there), so a wrong tag is rarer than a missing one.
Neither seed is an evaluation seed. The head goes to `<bundle>/tags/head.safetensors`
(`image.weight` (L, P), `image.bias` (L), `text.weight`, `text.bias`) and the thresholds to
`bundle.toml` (`[tags] head`, `[tags.image] threshold`, `[tags.text] threshold`), which the
Rust runtime reads; `models.eval` reports tag precision, recall and F1 (micro and per family)
on fresh seeds with the same rule.

    python -m models.tags --bundle models/shapes --seed 5151 --threshold-seed 6161 --write
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import tomllib
from pathlib import Path

import torch
from transformers import CLIPModel

from models.scenes import COLOURS, SHAPES, scenes
from models.train import build_tokenizer, encode, pixels

FAMILIES = {"shapes": list(SHAPES), "colours": list(COLOURS)}
GRID = [i / 100 for i in range(5, 96)]


def tag_spec(bundle: Path) -> dict:
    return tomllib.loads((bundle / "bundle.toml").read_text())["tags"]


def truth(objects, labels: list[str]) -> list[list[float]]:
    """1 where the scene holds an object of that shape or colour."""
    present = {o.shape for o in objects} | {o.colour for o in objects}
    return [float(label in present) for label in labels]


class Embedder:
    """The bundle's CLIP, normalised embeddings of images, texts and label prompts."""

    def __init__(self, bundle: Path):
        torch.set_num_threads(2)
        self.clip = CLIPModel.from_pretrained(str(bundle / "clip")).eval()
        self.tok = build_tokenizer()

    @torch.no_grad()
    def images(self, scene_list) -> torch.Tensor:
        out = []
        for i in range(0, len(scene_list), 250):
            e = self.clip.get_image_features(pixel_values=pixels(scene_list[i : i + 250]))
            out.append(torch.nn.functional.normalize(getattr(e, "pooler_output", e), dim=-1))
        return torch.cat(out)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), 250):
            ids, mask = encode(self.tok, texts[i : i + 250])
            e = self.clip.get_text_features(input_ids=ids, attention_mask=mask)
            out.append(torch.nn.functional.normalize(getattr(e, "pooler_output", e), dim=-1))
        return torch.cat(out)


def fit_head(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One logistic regression per label on the embedding (no penalty: the split is ~20
    scenes per weight, and every penalty tried on the validation seed cost F1)."""
    x, y = x.double(), y.double()
    w = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().T.float().contiguous(), b.detach().float().contiguous()


def pick_threshold(p: torch.Tensor, gold: torch.Tensor, min_precision: float) -> float:
    """Best-F1 threshold among those of precision >= min_precision; 2.0 (never) if none."""
    ok = []
    for th in GRID:
        precision, _, f = prf(p >= th, gold)
        if f and precision >= min_precision:
            ok.append((f, -abs(th - 0.5), th))
    return max(ok)[2] if ok else 2.0


def prf(pred: torch.Tensor, gold: torch.Tensor) -> tuple[float, float, float]:
    """Precision, recall and F1 of boolean decisions against the truth."""
    tp = float((pred & gold).sum())
    fp = float((pred & ~gold).sum())
    fn = float((~pred & gold).sum())
    return tp / max(tp + fp, 1.0), tp / max(tp + fn, 1.0), 2 * tp / max(2 * tp + fp + fn, 1.0)


def f1(pred: torch.Tensor, gold: torch.Tensor) -> float:
    return prf(pred, gold)[2]


def scores(e: torch.Tensor, head: dict, source: str) -> torch.Tensor:
    return torch.sigmoid(e.float() @ head[f"{source}.weight"].T + head[f"{source}.bias"])


def decide(e: torch.Tensor, head: dict, spec: dict, source: str) -> torch.Tensor:
    """(N, L) booleans: the rule the runtime applies."""
    return scores(e, head, source) >= torch.tensor(spec[source]["threshold"])


def report(pred: torch.Tensor, gold: torch.Tensor, labels: list[str]) -> dict:
    """Precision, recall and F1, micro over all labels and per family."""
    def rounded(p, g) -> dict:
        return dict(zip(("precision", "recall", "f1"), (round(x, 4) for x in prf(p, g))))

    out = {"micro": rounded(pred, gold)}
    for fam, members in FAMILIES.items():
        idx = [labels.index(m) for m in members if m in labels]
        out[fam] = rounded(pred[:, idx], gold[:, idx])
    return out


def caption_texts(scene_list) -> list[str]:
    """What a text-only event says: one of each scene's captions."""
    return [s.captions[i % len(s.captions)] for i, s in enumerate(scene_list)]


def embed(emb: Embedder, split, source: str) -> torch.Tensor:
    return emb.images(split) if source == "image" else emb.texts(caption_texts(split))


def load_head(bundle: Path, spec: dict) -> dict:
    from safetensors.torch import load_file

    return load_file(str(bundle / spec["head"]))


def evaluate_tags(bundle: Path, test, img: torch.Tensor | None = None) -> dict:
    """Tag quality of the bundle's head on a split (`img`: its image embeddings, if known)."""
    spec = tag_spec(bundle)
    if "head" not in spec:
        return {}
    emb = Embedder(bundle)
    head = load_head(bundle, spec)
    labels = spec["labels"]
    gold = torch.tensor([truth(s.objects, labels) for s in test]) > 0.5
    out = {}
    for source in ("image", "text"):
        e = img if source == "image" and img is not None else embed(emb, test, source)
        out[source] = report(decide(e, head, spec, source), gold, labels)
    return out


def calibrate(bundle: Path, seed: int, n: int, threshold_seed: int, min_precision: float):
    emb = Embedder(bundle)
    labels = tag_spec(bundle)["labels"]
    fit, pick = scenes(seed, n), scenes(threshold_seed, n // 2)
    y = torch.tensor([truth(s.objects, labels) for s in fit])
    gold = torch.tensor([truth(s.objects, labels) for s in pick]) > 0.5
    head, thresholds = {}, {}
    for source in ("image", "text"):
        w, b = fit_head(embed(emb, fit, source), y)
        head[f"{source}.weight"], head[f"{source}.bias"] = w, b
        p = scores(embed(emb, pick, source), head, source)
        thresholds[source] = [pick_threshold(p[:, j], gold[:, j], min_precision)
                              for j in range(len(labels))]
    return head, thresholds


def write(bundle: Path, head: dict, thresholds: dict, rel: str = "tags/head.safetensors") -> None:
    """Store the head and set `[tags] head` and the `[tags.image]` / `[tags.text]`
    thresholds in `bundle.toml` (the softmax `threshold` of prompt tags goes)."""
    from safetensors.torch import save_file

    (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
    save_file(head, str(bundle / rel))
    # safetensors writes 0600; the bundle is read by other users (the image's uid 65532).
    (bundle / rel).chmod(0o644)
    path = bundle / "bundle.toml"
    text = path.read_text()
    text = re.sub(r"\n(# [^\n]*\n)*\[tags\.(image|text)\]\n(?:[^\[\n][^\n]*\n)*", "\n", text)
    m = re.search(r"\[tags\]\n(?:[^\[\n][^\n]*\n)*", text)
    assert m, "bundle.toml has no [tags]"
    body = re.sub(r"(?m)^(threshold|head) = [^\n]*\n", "", m.group(0)).rstrip("\n") + "\n"
    body += f'head = "{rel}"\n'
    for source, ths in thresholds.items():
        body += (f"\n# Per-label thresholds on the head's scores from {source} embeddings "
                 f"(2.0: never emitted).\n[tags.{source}]\nthreshold = [{', '.join(repr(t) for t in ths)}]\n")
    text = text[: m.start()] + body + "\n" + text[m.end():].lstrip("\n")
    path.write_text(text)
    tomllib.loads(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/shapes"))
    ap.add_argument("--seed", type=int, default=5151, help="split the head is fitted on")
    ap.add_argument("--threshold-seed", type=int, default=6161, help="split the thresholds are chosen on")
    ap.add_argument("--scenes", type=int, default=3000)
    ap.add_argument("--min-precision", type=float, default=0.8)
    ap.add_argument("--write", action="store_true", help="write the head and thresholds into the bundle")
    ap.add_argument("--evaluate", type=int, nargs="+", metavar="SEED",
                    help="only measure the bundle's tags on fresh splits of these seeds (1,000 scenes)")
    args = ap.parse_args()
    t0 = time.time()
    if args.evaluate:
        for seed in args.evaluate:
            print(json.dumps({"seed": seed, "tags": evaluate_tags(args.bundle, scenes(seed, 1000))}))
        return
    head, thresholds = calibrate(args.bundle, args.seed, args.scenes, args.threshold_seed,
                                 args.min_precision)
    if args.write:
        write(args.bundle, head, thresholds)
    print(json.dumps({"seed": args.seed, "threshold_seed": args.threshold_seed, "scenes": args.scenes,
                      "min_precision": args.min_precision, "thresholds": thresholds,
                      "seconds": round(time.time() - t0, 1)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
