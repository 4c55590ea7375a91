"""Recipe experiments on the validation seed: train one part for a short budget with a given
option and report what it recognises, per attribute.

    python -m models.tools.recipe_probe caption --minutes 4 --aux 1.0
    python -m models.tools.recipe_probe clip --minutes 4 --aux 1.0
    python -m models.tools.recipe_probe vision --focus --teacher-minutes 2 --minutes 10
    python -m models.tools.recipe_probe tags --bundle models/shapes

`caption`: greedy captions of 500 validation scenes (seed 2000), accuracy per attribute (shape,
colour, size, position) of the generated object phrases, matched to the true objects as
`models.eval` matches them. `clip`: image→caption / caption→image R@1 on 1,000 validation
scenes, and the shape and colour F1 of a tag head fitted on seed 5151 (`models.tags`).
`vision`: a vision tower alone (BLIP's ViT, or a small CNN as the yardstick) with a per-patch
head (`models.train.PatchHead`), optionally distilled from a CNN trained first; the shape the
head gives each validation object (majority of its patches) and the confusion matrix. Prints
one JSON line. `tags`: the tag F1 a head reaches on 1,000 validation scenes, by the bundle's own rule
(fitted on seed 5151, per-label thresholds at precision >= 0.8 on seed 6161), from each
feature a trained bundle offers: from images, CLIP's projected embedding, the mean and max
over the patch states of CLIP's and of the captioner's vision towers (a logistic regression
each), and the captioner's patch states with a linear head per patch and a max over patches
(the shipped image head); from texts, CLIP's text embedding (a logistic regression) and the
CLIP text encoder's per-token states at each depth, input embeddings (the shipped text head)
to output, with a linear head per token and a max over tokens. Never run on an evaluation
seed: these figures choose the recipe.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from models import tags
from models.eval import ATTRIBUTES, attribute_score, hits, words
from models.scenes import COLOURS, SHAPES, scenes
from models.train import (Budget, ConvTower, PatchHead, Teacher, batches, build_tokenizer, encode, focus_loss,
                          patch_targets, pixels, train_caption, train_clip)

VALIDATION = 2000


@torch.no_grad()
def probe_caption(model, tok) -> dict:
    val = scenes(VALIDATION, 500)
    px = pixels(val)
    gen = []
    for i in range(0, len(val), 250):
        ids = model.generate(pixel_values=px[i : i + 250], max_new_tokens=32, do_sample=False)
        gen += [words(tok.decode(r.tolist(), skip_special_tokens=True)) for r in ids]
    total = sum(len(s.objects) for s in val)
    right = Counter()
    for g, s in zip(gen, val):
        right.update(attribute_score(g, s.objects))
    return {a: round(right[a] / total, 3) for a in ATTRIBUTES} | {"examples": gen[:3]}


@torch.no_grad()
def probe_clip(model, tok) -> dict:
    val = scenes(VALIDATION, 1000)
    px, caps = pixels(val), [s.caption for s in val]
    img, txt = [], []
    for i in range(0, len(val), 250):
        e = model.get_image_features(pixel_values=px[i : i + 250])
        img.append(torch.nn.functional.normalize(getattr(e, "pooler_output", e), dim=-1))
        ids, mask = encode(tok, caps[i : i + 250])
        t = model.get_text_features(input_ids=ids, attention_mask=mask)
        txt.append(torch.nn.functional.normalize(getattr(t, "pooler_output", t), dim=-1))
    img, txt = torch.cat(img), torch.cat(txt)
    # A tag head fitted on another split, scored on this one (threshold 0.5: the probe's
    # signal, not the bundle's tuned rule).
    labels = tags.FAMILIES["shapes"] + tags.FAMILIES["colours"]
    fit = scenes(5151, 3000)
    x = []
    for i in range(0, len(fit), 250):
        e = model.get_image_features(pixel_values=pixels(fit[i : i + 250]))
        x.append(torch.nn.functional.normalize(getattr(e, "pooler_output", e), dim=-1))
    w, b = tags.fit_head(torch.cat(x), torch.tensor([tags.truth(s.objects, labels) for s in fit]))
    pred = torch.sigmoid(img @ w.T + b) >= 0.5
    gold = torch.tensor([tags.truth(s.objects, labels) for s in val]).bool()
    shapes = len(tags.FAMILIES["shapes"])
    f1 = {f"tag_f1_{fam}": round(tags.prf(pred[:, cols], gold[:, cols])[2], 3)
          for fam, cols in (("shapes", slice(0, shapes)), ("colours", slice(shapes, None)))}
    return {"r1_i2t": hits(caps, caps, img, txt), "r1_t2i": hits(caps, caps, txt, img)} | f1


class PatchStates(torch.nn.Module):
    """A ViT's patch states (its class token dropped)."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=pixel_values).last_hidden_state[:, 1:]


def make_tower(args) -> torch.nn.Module:
    if args.tower == "cnn":
        return ConvTower(args.patch)
    from transformers import BlipVisionConfig, BlipVisionModel

    return PatchStates(BlipVisionModel(BlipVisionConfig(
        hidden_size=128, intermediate_size=384, num_hidden_layers=args.layers, num_attention_heads=4,
        image_size=args.input, patch_size=args.patch, initializer_range=0.02)))


def fit_patch_head(data, px, targets, args, log, teacher=None):
    """Train `make_tower(args)` and a `PatchHead` on the head's loss (shape alone on object
    patches with `--focus`), plus, with a teacher, the regression of the teacher's
    standardised patch features (a dense signal with a CNN's locality in it)."""
    tower, head, match = make_tower(args).train(), PatchHead(128), torch.nn.Linear(128, 128)
    params = list(tower.parameters()) + list(head.parameters()) + (list(match.parameters()) if teacher else [])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    sched, rng = Budget(opt, args.minutes, args.lr), random.Random(2)
    for _, x, rows in batches(data, px, 64, rng):
        if not sched.tick():
            break
        states = tower(x)
        loss = torch.zeros(())
        if teacher is not None:
            with torch.no_grad():
                f = teacher(x)
                f = (f - f.mean(dim=(0, 1))) / (f.std(dim=(0, 1)) + 1e-5)
            loss = torch.nn.functional.mse_loss(match(states), f)
        t = targets[rows]
        if args.focus:
            loss = loss + focus_loss(head, states, t)
        else:
            loss = loss + head.loss(states, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched.step % 100 == 0:
            log(f"{args.tower} step {sched.step} loss {loss.item():.3f}")
    return tower.eval(), head


@torch.no_grad()
def object_shapes(tower, head, val, vpx, grid: int) -> dict:
    """The head's shape of each validation object: the majority over the object's patches."""
    vt = patch_targets(val, grid)
    pred = head(tower(vpx))[..., 1 : 1 + len(SHAPES)].argmax(-1)
    right = total = 0
    confusion = torch.zeros(len(SHAPES), len(SHAPES), dtype=torch.long)
    for n, s in enumerate(val):
        for o in s.objects:
            rows = (vt[n, :, 0] != 0) & (vt[n, :, 1] == 1 + list(COLOURS).index(o.colour))
            if rows.any():
                guess = torch.mode(pred[n][rows]).values.item()
                confusion[SHAPES.index(o.shape), guess] += 1
                right += guess == SHAPES.index(o.shape)
            total += 1
    return {"object_shape_accuracy": round(right / total, 3), "confusion": confusion.tolist()}


def train_vision(data, args, log) -> dict:
    """A vision tower alone (BLIP's ViT, or `ConvTower`) with a `PatchHead` on its patch
    states; optionally distilled from a CNN trained first for `--teacher-minutes`."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    proc = CLIPImageProcessorPil(size={"shortest_edge": args.input},
                                 crop_size={"height": args.input, "width": args.input})

    def pixels_at(batch):
        return torch.tensor(np.stack(proc([s.image for s in batch], return_tensors="np")["pixel_values"]))

    grid = args.input // args.patch
    px, targets = pixels_at(data), patch_targets(data, grid)
    val = scenes(VALIDATION, 500)
    vpx = pixels_at(val)
    res, teacher = {}, None
    if args.teacher_minutes:
        t_args = argparse.Namespace(**(vars(args) | {"tower": "cnn", "minutes": args.teacher_minutes}))
        teacher, t_head = fit_patch_head(data, px, targets, t_args, log)
        res["teacher"] = object_shapes(teacher, t_head, val, vpx, grid)
        log(f"teacher {res['teacher']}")
    tower, head = fit_patch_head(data, px, targets, args, log, teacher)
    return res | object_shapes(tower, head, val, vpx, grid)


@torch.no_grad()
def tag_features(bundle, split) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Per scene, each feature a tag head could read, with the mask of its rows (`None`: one
    vector, or rows all real). Images: CLIP's normalised image embedding; [mean, max] over the
    patch states of CLIP's vision tower and of the captioner's; the captioner's patch states
    themselves (N, patches, D). Texts (one caption per scene, `models.tags.caption_texts`):
    CLIP's normalised text embedding; the CLIP text encoder's states per token at its input
    (token + position embeddings), after each layer, and at its output (final LayerNorm)."""
    from transformers import BlipForConditionalGeneration, CLIPModel

    clip = CLIPModel.from_pretrained(str(bundle / "clip")).eval()
    cap = BlipForConditionalGeneration.from_pretrained(str(bundle / "blip-caption")).eval()
    tok = build_tokenizer()
    out: dict[str, list] = {}

    def add(key, x, mask=None):
        out.setdefault(key, []).append((x, mask))

    text_ids, text_mask = encode(tok, tags.caption_texts(split))  # one width for every chunk
    for i in range(0, len(split), 250):
        px = pixels(split[i : i + 250])
        vision = clip.vision_model(pixel_values=px)  # one pass: the embedding is its projected pool
        add("clip_embedding", torch.nn.functional.normalize(clip.visual_projection(vision.pooler_output), dim=-1))
        caption_states = cap.vision_model(pixel_values=px).last_hidden_state[:, 1:]
        add("caption_states", caption_states)
        for key, states in (("clip_patches", vision.last_hidden_state[:, 1:]), ("caption_patches", caption_states)):
            add(key, torch.cat([states.mean(1), states.amax(1)], dim=-1))
        ids, mask = text_ids[i : i + 250], text_mask[i : i + 250]
        t = clip.text_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        add("text_embedding", torch.nn.functional.normalize(clip.text_projection(t.pooler_output), dim=-1))
        for layer, states in enumerate(t.hidden_states):
            add(f"text_layer{layer}", states, mask.bool())
        add("text_output", t.last_hidden_state, mask.bool())

    def join(parts):
        masks = [m for _, m in parts]
        return torch.cat([x for x, _ in parts]), None if masks[0] is None else torch.cat(masks)

    return {k: join(v) for k, v in out.items()}


def max_head(soft_steps: int):
    """`models.tags.fit_max_head` (a linear score per row, max over the rows) and its scorer."""
    def fit(x, mask, y):
        w, b = tags.fit_max_head(x, y, mask, soft_steps=soft_steps)
        return lambda v, m: torch.sigmoid(tags.max_logits(v, w, m) + b)
    return fit


def linear_head(x: torch.Tensor, mask, y: torch.Tensor):
    """`models.tags.fit_head` on standardised features; the scorer of new features."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w, b = tags.fit_head((x - mu) / sd, y)
    return lambda v, m: torch.sigmoid(((v - mu) / sd) @ w.T + b)


def probe_tags(bundle) -> dict:
    """Each feature's head fitted on seed 5151 and its per-label thresholds chosen on seed 6161
    as the bundle's are (best F1 at precision >= 0.8, `models.tags.pick_threshold`); F1 on the
    validation seed, micro and per family. The image heads score the scene's image, the text
    heads one of its captions; the heads the bundle ships are `caption_patch_max` (images) and
    `text_layer0_max` (texts), fitted as `models.tags` fits them."""
    labels = tags.FAMILIES["shapes"] + tags.FAMILIES["colours"]
    splits = {"fit": scenes(5151, 3000), "cal": scenes(6161, 1500), "val": scenes(VALIDATION, 1000)}
    feats = {k: tag_features(bundle, s) for k, s in splits.items()}
    gold = {k: torch.tensor([tags.truth(o.objects, labels) for o in s]) for k, s in splits.items()}
    shapes, res = len(tags.FAMILIES["shapes"]), {}
    soft = tags.MAX_HEAD_STEPS // 2
    heads = [("clip_embedding", "clip_embedding", linear_head), ("clip_patches", "clip_patches", linear_head),
             ("caption_patches", "caption_patches", linear_head),
             ("caption_patch_max", "caption_states", max_head(0)),
             ("text_embedding", "text_embedding", linear_head)]
    heads += [(f"{k}_max", k, max_head(soft)) for k in feats["fit"] if k.startswith("text_layer")]
    heads.append(("text_output_max", "text_output", max_head(soft)))
    for name, key, fit in heads:
        with torch.enable_grad():
            score = fit(*feats["fit"][key], gold["fit"])
        cal = score(*feats["cal"][key])
        th = torch.tensor([tags.pick_threshold(cal[:, j], gold["cal"][:, j].bool(), 0.8) for j in range(len(labels))])
        pred, truth = score(*feats["val"][key]) >= th, gold["val"].bool()
        res[name] = {fam: round(tags.prf(pred[:, cols], truth[:, cols])[2], 3) for fam, cols in
                     (("micro", slice(None)), ("shapes", slice(0, shapes)), ("colours", slice(shapes, None)))}
        print(name, res[name], flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["caption", "clip", "vision", "tags"])
    ap.add_argument("--bundle", type=Path, default=Path("models/shapes"), help="tags: the trained bundle")
    ap.add_argument("--input", type=int, default=64, help="vision: input resolution")
    ap.add_argument("--patch", type=int, default=8, help="vision: patch size")
    ap.add_argument("--layers", type=int, default=4, help="vision: layers")
    ap.add_argument("--tower", choices=["vit", "cnn"], default="vit", help="vision: BLIP's ViT or a small CNN")
    ap.add_argument("--teacher-minutes", type=float, default=0.0,
                    help="first train a CNN this long, then distil its patch features into the tower")
    ap.add_argument("--distill", type=float, default=1.0, help="caption, clip: weight of the distillation loss")
    ap.add_argument("--focus", action="store_true", help="vision: shape loss on object patches only")
    ap.add_argument("--scale", type=float, default=1.0, help="objects of the training scenes drawn this much larger")
    ap.add_argument("--lr", type=float, default=1e-3, help="vision: peak learning rate")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--aux", type=float, default=0.0, help="weight of the patch-head loss")
    ap.add_argument("--train-scenes", type=int, default=12000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    tok = build_tokenizer()
    data = scenes(1000, args.train_scenes, args.scale)
    px = pixels(data)

    def log(msg: str) -> None:
        if "step" not in msg or msg.split("step ")[1].split()[0].endswith("00"):
            print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    if args.part == "tags":
        res = probe_tags(args.bundle)
    elif args.part == "vision":
        res = train_vision(data, args, log)
    else:
        teacher = Teacher.fit(data, px, args.teacher_minutes, args.distill, log)
        train = train_caption if args.part == "caption" else train_clip
        model = train(data, px, tok, args.minutes, log, aux=args.aux, teacher=teacher)
        res = (probe_caption if args.part == "caption" else probe_clip)(model, tok)
    print(json.dumps(vars(args) | res | {"seconds": round(time.time() - t0)}, default=str), flush=True)


if __name__ == "__main__":
    main()
