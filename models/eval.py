"""Evaluate a "shapes" bundle on a fresh test split generated from a seed.

    python -m models.eval --bundle models/shapes --seed N --json [--backend onnx --precision int8]

`--backend onnx` runs the same evaluation through onnxruntime on the bundle's exported graphs
(`python -m models.export_onnx`), driven as the Rust runtime drives them (greedy decoding over
the decoder-step graph): the quality of the f32 and int8 graphs, measured on the same scenes.

Prints one JSON object. Metrics (pool of 1,000 scenes unless --scenes says otherwise):
- clip_r1_i2t / clip_r1_t2i: image→caption and caption→image retrieval at rank 1, with the
  canonical captions. A hit is the paired item or any item whose scene is identical in every
  described attribute (same canonical caption): that ambiguity belongs to the data.
- vqa_accuracy (and vqa_accuracy_by_type): exact-match answers to up to 3 questions per scene,
  greedy decoding.
- caption_bleu4: corpus BLEU-4 of greedy captions against all reference captions of each scene
  (both split into words and punctuation as the tokenizer splits them).
- caption_attribute_accuracy: share of (object, attribute) pairs named correctly, attributes
  shape, colour, size, position; each true object is matched to the generated object phrase
  that agrees with it on most attributes (each phrase used once); `_by_kind` per attribute
  (the captioner's shape recognition is `shape`).
- fused_r1_both / fused_r1_image_only / fused_r1_text_only: the gallery is the fused
  (image + caption) embedding of every scene; the queries are a second rendering of each
  scene (new background, jitter) fused with its caption, that second image alone, and the
  caption alone. Hits as for CLIP retrieval.
- tags (bundles with a tag head, `models/tags.py`): precision, recall and F1 of the tag
  decisions against the shapes and colours each scene holds, micro over all labels and per
  family (shapes, colours), from the images (`tags.image`) and from one of each scene's
  captions taken as a text-only event's text (`tags.text`), each read by its head's features
  (`features`: `models/tags.py`).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering, CLIPModel

from models.fusion import GatedFusionHead
from models.scenes import POSITION_PHRASE, render, scenes
from models.tags import evaluate_tags
from models.train import DEC, build_tokenizer, encode, pixels

PHRASE_TO_POS = {v: k for k, v in POSITION_PHRASE.items()}
OBJ_RE = re.compile(r"\b(small|large) (\w+) (\w+)(?: (on the left|on the right|at the top|at the bottom|in the centre))?")


def words(text: str) -> str:
    """Text as the tokenizer splits it (punctuation apart), so that "centre, a" in a reference
    and "centre , a" decoded from token ids compare equal."""
    return " ".join(re.findall(r"\w+|[^\w\s]", text.lower()))


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu4(hyps: list[str], refs: list[list[str]]) -> float:
    match, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for h, rs in zip(hyps, refs):
        hw, rws = h.split(), [r.split() for r in rs]
        hyp_len += len(hw)
        ref_len += min((abs(len(r) - len(hw)), len(r)) for r in rws)[1]
        for n in range(1, 5):
            hc = ngrams(hw, n)
            maxref: Counter = Counter()
            for r in rws:
                maxref |= ngrams(r, n)
            match[n - 1] += sum(min(c, maxref[g]) for g, c in hc.items())
            total[n - 1] += max(len(hw) - n + 1, 0)
    if min(match) == 0:
        return 0.0
    logp = sum(math.log(m / t) for m, t in zip(match, total)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return bp * math.exp(logp)


ATTRIBUTES = ("shape", "colour", "size", "position")


def attribute_score(caption: str, objects) -> Counter:
    """Right (object, attribute) pairs of a caption per attribute: each true object matched to
    the generated object phrase that agrees with it on most attributes (each phrase used
    once); out of `len(objects)` per attribute."""
    found = [
        {"size": m[0], "colour": m[1], "shape": m[2], "position": PHRASE_TO_POS.get(m[3] or "", None)}
        for m in OBJ_RE.findall(caption)
    ]
    right: Counter = Counter(dict.fromkeys(ATTRIBUTES, 0))
    for o in objects:
        truth = {"size": o.size, "colour": o.colour, "shape": o.shape, "position": o.position}
        best, best_i = 0, None
        for i, f in enumerate(found):
            k = sum(f[a] == truth[a] for a in truth)
            if k > best:
                best, best_i = k, i
        if best_i is not None:
            right.update({a: int(found[best_i][a] == truth[a]) for a in ATTRIBUTES})
            found.pop(best_i)
    return right


def hits(query_caps: list[str], gallery_caps: list[str], q: torch.Tensor, g: torch.Tensor) -> float:
    top = (q @ g.T).argmax(dim=1).tolist()
    return sum(gallery_caps[j] == query_caps[i] for i, j in enumerate(top)) / len(query_caps)


class OnnxBundle:
    """The bundle's graphs through onnxruntime, with the torch models' call shapes."""

    def __init__(self, bundle: Path, precision: str):
        from models import onnx_run

        self.r = onnx_run
        self.p = precision
        self.bundle = bundle
        self.clip_v = onnx_run.session(bundle / "clip", "vision", precision, 2)
        self.clip_t = onnx_run.session(bundle / "clip", "text", precision, 2)

    def img_emb(self, x):
        e = self.clip_v.run(None, {"pixel_values": x.numpy()})[0]
        return torch.nn.functional.normalize(torch.from_numpy(e), dim=-1)

    def txt_emb(self, ids, mask):
        e = self.clip_t.run(None, {"input_ids": ids.numpy().astype("int64"),
                                   "attention_mask": mask.numpy().astype("int64")})[0]
        return torch.nn.functional.normalize(torch.from_numpy(e), dim=-1)

    def caption_states(self, px):
        if not hasattr(self, "cap_v"):
            self.cap_v = self.r.session(self.bundle / "blip-caption", "vision", self.p, 2)
        return self.cap_v.run(None, {"pixel_values": px.numpy()})[0]

    def captions(self, px, max_new):
        if not hasattr(self, "cap"):
            self.cap = self.r.Decoder(self.bundle / "blip-caption", self.p, 2)
        states = self.caption_states(px)
        return self.cap.greedy(states, np.ones(states.shape[:2], np.float32), max_new)

    def answers(self, q, mask, px, max_new):
        part = self.bundle / "blip-vqa"
        if not hasattr(self, "vqa"):
            self.vqa_v = self.r.session(part, "vision", self.p, 2)
            self.vqa_q = self.r.session(part, "question_encoder", self.p, 2)
            self.vqa = self.r.Decoder(part, self.p, 2)
        states = self.vqa_v.run(None, {"pixel_values": px.numpy()})[0]
        m = mask.numpy().astype("int64")
        qs = self.vqa_q.run(None, {"input_ids": q.numpy().astype("int64"), "attention_mask": m,
                                   "image_states": states})[0]
        return self.vqa.greedy(qs, m.astype(np.float32), max_new)


@torch.no_grad()
def evaluate(bundle: Path, seed: int, n: int, backend: str = "torch", precision: str = "f32") -> dict:
    torch.set_num_threads(2)
    tok = build_tokenizer()
    test = scenes(seed, n)
    px = pixels(test)
    caps = [s.caption for s in test]
    # A second view of every scene, for the fused retrieval queries.
    rng = random.Random(seed * 7919 + 1)
    view2 = pixels([type(s)(render(s.objects, rng), s.objects, s.captions, s.qa) for s in test])
    out: dict = {"seed": seed, "scenes": n, "bundle": str(bundle), "backend": backend,
                 "precision": precision}
    onnx = OnnxBundle(bundle, precision) if backend == "onnx" else None

    if onnx is None:
        clip = CLIPModel.from_pretrained(str(bundle / "clip")).eval()

    def img_emb(x):
        if onnx is not None:
            return onnx.img_emb(x)
        e = clip.get_image_features(pixel_values=x)
        return torch.nn.functional.normalize(getattr(e, "pooler_output", e), dim=-1)

    def txt_emb(texts):
        ids, mask = encode(tok, texts)
        if onnx is not None:
            return onnx.txt_emb(ids, mask)
        e = clip.get_text_features(input_ids=ids, attention_mask=mask)
        return torch.nn.functional.normalize(getattr(e, "pooler_output", e), dim=-1)

    chunks = range(0, n, 250)
    img = torch.cat([img_emb(px[i : i + 250]) for i in chunks])
    img2 = torch.cat([img_emb(view2[i : i + 250]) for i in chunks])
    txt = torch.cat([txt_emb(caps[i : i + 250]) for i in chunks])
    # Tags (a bundle with a tag head): precision / recall / F1, micro and per label family,
    # from the images and from one caption per scene as a text-only event's text.
    tags = evaluate_tags(bundle, test, onnx)
    if tags:
        out["tags"] = tags
    out["clip_r1_i2t"] = hits(caps, caps, img, txt)
    out["clip_r1_t2i"] = hits(caps, caps, txt, img)

    head = GatedFusionHead.load(bundle / "fusion").eval()
    ones, zeros = torch.ones(n), torch.zeros(n)
    gallery = head(img, txt, ones, ones)
    out["fused_r1_both"] = hits(caps, caps, head(img2, txt, ones, ones), gallery)
    out["fused_r1_image_only"] = hits(caps, caps, head(img2, txt, ones, zeros), gallery)
    out["fused_r1_text_only"] = hits(caps, caps, head(img2, txt, zeros, ones), gallery)

    if onnx is None:
        cap_model = BlipForConditionalGeneration.from_pretrained(str(bundle / "blip-caption")).eval()
    gen = []
    for i in chunks:
        if onnx is not None:
            ids = onnx.captions(px[i : i + 250], 32)
        else:
            ids = [r.tolist() for r in cap_model.generate(pixel_values=px[i : i + 250], max_new_tokens=32, do_sample=False)]
        gen += [tok.decode(r, skip_special_tokens=True) for r in ids]
    gen = [words(g) for g in gen]
    out["caption_bleu4"] = corpus_bleu4(gen, [[words(c) for c in s.captions] for s in test])
    right: Counter = Counter()
    for g, s in zip(gen, test):
        right.update(attribute_score(g, s.objects))
    objects = sum(len(s.objects) for s in test)
    out["caption_attribute_accuracy"] = sum(right[a] for a in ATTRIBUTES) / (len(ATTRIBUTES) * objects)
    out["caption_attribute_accuracy_by_kind"] = {a: right[a] / objects for a in ATTRIBUTES}
    out["caption_exact_match"] = sum(g == words(s.caption) for g, s in zip(gen, test)) / n
    out["caption_examples"] = [{"reference": s.caption, "generated": g} for s, g in list(zip(test, gen))[:5]]

    if onnx is None:
        vqa = BlipForQuestionAnswering.from_pretrained(str(bundle / "blip-vqa")).eval()
    qrng = random.Random(seed + 17)
    items = [(i, qa) for i, s in enumerate(test) for qa in qrng.sample(s.qa, min(3, len(s.qa)))]
    correct: dict = defaultdict(int)
    count: dict = defaultdict(int)
    for k in range(0, len(items), 256):
        part = items[k : k + 256]
        q, mask = encode(tok, [qa[1] for _, qa in part])
        if onnx is not None:
            ids = onnx.answers(q, mask, px[[i for i, _ in part]], 4)
        else:
            ids = [r.tolist() for r in vqa.generate(input_ids=q, attention_mask=mask, pixel_values=px[[i for i, _ in part]],
                                                    max_new_tokens=4, do_sample=False)]
        for (_, (kind, _, ans)), row in zip(part, ids):
            pred = tok.decode([x for x in row if x != DEC], skip_special_tokens=True).strip()
            count[kind] += 1
            correct[kind] += pred == ans
    out["vqa_accuracy"] = sum(correct.values()) / sum(count.values())
    out["vqa_accuracy_by_type"] = {k: correct[k] / count[k] for k in sorted(count)}
    out["vqa_questions"] = sum(count.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/shapes"))
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--scenes", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    ap.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                    help="transformers, or onnxruntime on the bundle's exported graphs")
    ap.add_argument("--precision", choices=["f32", "int8"], default="f32", help="ONNX graphs to run")
    args = ap.parse_args()
    t0 = time.time()
    res = evaluate(args.bundle, args.seed, args.scenes, args.backend, args.precision)
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=None if args.json else 1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
