"""Train the default "shapes" bundle from scratch: CLIP, BLIP captioning, BLIP VQA and the
gated fusion head, on procedurally generated scenes (`models/scenes.py`), with transformers
classes so that the checkpoints are standard Hugging Face ones.

    python -m models.train --out models/shapes            # about 67 minutes on 2 CPU cores

First a small CNN (`ConvTower`) learns each patch's shape from the scenes' masks (5
minutes); CLIP's and the captioner's ViTs are then trained on their own losses plus the
per-patch loss (`PatchLoss`) and the regression of that CNN's patch features (`Teacher`):
alone, these ViTs do not learn shape within the budget (model card, "Why shapes are not
learnt"). The CNN and both training-only heads are dropped; the parts are plain HF models.
After the parts, the tag heads and their per-label thresholds are fitted on the trained
captioner's patch states (image tags) and CLIP's token embeddings (text tags) (`models/tags.py`,
seeds 5151 and 6161, ~40 s) and written into the bundle.

Each part trains for a fixed wall-clock budget (so retraining fits in an hour on a 2-core
CPU); the learning rate decays over that budget. Seeds: training scenes 1000, validation 2000
(the evaluation, `python -m models.eval`, generates its own split from the seed it is given).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BlipConfig, BlipForConditionalGeneration, BlipForQuestionAnswering, CLIPConfig, CLIPModel
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from models.fusion import GatedFusionHead
from models.scenes import COLOURS, SHAPES, Scene, scenes, vocabulary
from models.tools.store_half import store_half

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[DEC]", "[ENC]", "[MASK]"]
PAD, CLS, SEP, DEC = 0, 2, 3, 4
INPUT = 64  # model input resolution (scenes are drawn at 128)
PATCH = 8
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
VERSION = "1.4.0"
# Splits the tag head is fitted on and its thresholds chosen on (never evaluation seeds).
TAG_SEEDS = (5151, 6161)


def build_tokenizer() -> Tokenizer:
    vocab = {t: i for i, t in enumerate(SPECIALS + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)]
    )
    tok.add_special_tokens(SPECIALS)
    return tok


def processors_() -> tuple[CLIPImageProcessorPil, BlipImageProcessorPil]:
    clip = CLIPImageProcessorPil(size={"shortest_edge": INPUT}, crop_size={"height": INPUT, "width": INPUT})
    blip = BlipImageProcessorPil(size={"height": INPUT, "width": INPUT}, image_mean=MEAN, image_std=STD)
    return clip, blip


def pixels(batch: list[Scene]) -> torch.Tensor:
    """Exactly what the CLIP and BLIP processors of the bundle produce (both are a bicubic
    resize of the 128x128 scene to 64x64 and CLIP normalisation)."""
    clip, _ = processors_()
    return torch.tensor(np.stack(clip([s.image for s in batch], return_tensors="np")["pixel_values"]))


def patch_targets(batch: list[Scene], grid: int = INPUT // PATCH) -> torch.Tensor:
    """What each patch of the model's grid shows, from the scenes' masks: (N, grid², 3) with
    shape (0 background, 1 + index in SHAPES), colour (0, 1 + index in COLOURS) and size
    (0, 1 small, 2 large) of the object covering most of the patch, if it covers a quarter."""
    colours, sizes = list(COLOURS), ["small", "large"]
    out = torch.zeros(len(batch), grid * grid, 3, dtype=torch.long)
    for n, s in enumerate(batch):
        cell = s.mask.shape[0] // grid
        cells = s.mask.reshape(grid, cell, grid, cell).transpose(0, 2, 1, 3).reshape(grid * grid, cell * cell)
        for k, o in enumerate(s.objects):
            cover = (cells == k + 1).mean(axis=1)
            rows = torch.from_numpy(np.nonzero((cover >= 0.25) & (cover >= (cells != 0).mean(axis=1) / 2))[0])
            out[n, rows] = torch.tensor([1 + SHAPES.index(o.shape), 1 + colours.index(o.colour), 1 + sizes.index(o.size)])
    return out


class PatchHead(torch.nn.Module):
    """Training-only probe on a vision tower's patch states: predicts the shape, colour and
    size of what each patch shows (`patch_targets`). Its loss, added to a part's own, gives the
    tower a direct per-region signal; the head is dropped when the part is saved."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = torch.nn.Linear(width, 1 + len(SHAPES) + 1 + len(COLOURS) + 3)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.proj(states)

    def loss(self, states: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = self(states).flatten(0, 1)
        t = target.flatten(0, 1)
        a, b = 1 + len(SHAPES), 2 + len(SHAPES) + len(COLOURS)
        ce = torch.nn.functional.cross_entropy
        return ce(logits[:, :a], t[:, 0]) + ce(logits[:, a:b], t[:, 1]) + ce(logits[:, b:], t[:, 2])


class PatchLoss:
    """The optional per-patch auxiliary loss of a part: `weight` × a `PatchHead`'s loss on the
    vision tower's patch states against the training scenes' `patch_targets`. With weight 0
    there is no head and the loss adds nothing (the recipe as without it)."""

    def __init__(self, width: int, data: list[Scene], weight: float):
        self.weight = weight
        self.head = PatchHead(width) if weight > 0 else None
        self.targets = patch_targets(data) if weight > 0 else None

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.head.parameters()) if self.head is not None else []

    def __call__(self, states: torch.Tensor, rows: list[int]) -> torch.Tensor | float:
        """`states`: the tower's output with its class token first; `rows`: the batch's scenes."""
        if self.head is None:
            return 0.0
        return self.weight * self.head.loss(states[:, 1:], self.targets[rows])


class ConvTower(torch.nn.Module):
    """A small CNN with a ViT's output grid (one 128-dim state per patch; 8 px patches take
    three 2x poolings, 16 px four). The teacher of the vision towers (`Teacher`): on these
    scenes it learns shape in two minutes where a ViT of our budget stays at chance (model
    card, "Why shapes are not learnt"). A training-time tool, never a bundle part."""

    def __init__(self, patch: int = PATCH):
        super().__init__()
        conv, widths = torch.nn.Conv2d, [3, 32, 64, 64, 64][: patch.bit_length()]
        layers = []
        for a, b in zip(widths, widths[1:]):
            layers += [conv(a, b, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
        self.net = torch.nn.Sequential(*layers, conv(widths[-1], 128, 3, padding=2, dilation=2), torch.nn.ReLU())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values).flatten(2).transpose(1, 2)


def focus_loss(head: PatchHead, states: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The shape term of a `PatchHead` on the patches an object covers (background and
    colour left out: the loss a shape teacher trains on)."""
    on = target[..., 0] != 0
    return torch.nn.functional.cross_entropy(head(states)[on][:, 1 : 1 + len(SHAPES)], target[on][:, 0] - 1)


class Teacher:
    """CNN→ViT feature distillation (DeiT's observation: a convnet teacher hands a ViT its
    inductive bias). `fit` trains a `ConvTower` with a `PatchHead`'s shape loss on the training
    scenes' `patch_targets`, then keeps its patch features of every training scene,
    standardised per channel. A part's loss then adds `weight` × the mean squared error of a
    linear map of its tower's patch states to those features. With weight 0 there is nothing
    to fit and the loss adds nothing."""

    def __init__(self, features: torch.Tensor | None, weight: float):
        self.features, self.weight = features, weight

    @classmethod
    def fit(cls, data: list[Scene], px: torch.Tensor, minutes: float, weight: float, log) -> "Teacher":
        if weight <= 0 or minutes <= 0:
            return cls(None, 0.0)
        tower, head, targets = ConvTower().train(), PatchHead(128), patch_targets(data)
        opt = torch.optim.AdamW(list(tower.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=0.05)
        sched = Budget(opt, minutes, 1e-3)
        for _, x, rows in batches(data, px, 64, random.Random(5)):
            if not sched.tick():
                break
            loss = focus_loss(head, tower(x), targets[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched.step % 50 == 0:
                log(f"teacher step {sched.step} loss {loss.item():.3f}")
        with torch.no_grad():
            tower.eval()
            f = torch.cat([tower(px[i : i + 500]) for i in range(0, len(px), 500)])
            f = (f - f.mean(dim=(0, 1))) / (f.std(dim=(0, 1)) + 1e-5)
        log(f"teacher features {tuple(f.shape)}")
        return cls(f, weight)

    def student(self, width: int) -> "Distill":
        return Distill(self, width)


class Distill:
    """One part's side of `Teacher`: the linear map from its patch states to the teacher's
    features (training-only, dropped when the part is saved)."""

    def __init__(self, teacher: Teacher, width: int):
        self.teacher = teacher
        on = teacher.features is not None
        self.match = torch.nn.Linear(width, teacher.features.shape[-1]) if on else None

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.match.parameters()) if self.match is not None else []

    def __call__(self, states: torch.Tensor, rows: list[int]) -> torch.Tensor | float:
        """`states`: the tower's output with its class token first; `rows`: the batch's scenes."""
        if self.match is None:
            return 0.0
        target = self.teacher.features[rows]
        return self.teacher.weight * torch.nn.functional.mse_loss(self.match(states[:, 1:]), target)


NO_TEACHER = Teacher(None, 0.0)


def pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (n - len(s)) for s in seqs])


def encode(tok: Tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [tok.encode(t).ids for t in texts]
    return pad(ids, PAD), pad([[1] * len(i) for i in ids], 0)


def clip_config(vocab: int) -> CLIPConfig:
    return CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, max_position_embeddings=48, bos_token_id=CLS, eos_token_id=SEP,
                         pad_token_id=PAD),
        vision_config=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                           image_size=INPUT, patch_size=PATCH),
        projection_dim=128,
    )


def blip_config(vocab: int) -> BlipConfig:
    # BLIP's vision config defaults to initializer_range 1e-10 (its checkpoints are always
    # loaded, never initialised): trained from scratch, every vision weight would start at
    # ~1e-10 and the patch signal would drown in the first LayerNorm's epsilon. 0.02, as CLIP.
    return BlipConfig(
        vision_config=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                           image_size=INPUT, patch_size=PATCH, initializer_range=0.02),
        text_config=dict(vocab_size=vocab, hidden_size=128, encoder_hidden_size=128, intermediate_size=384,
                         num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=48,
                         bos_token_id=DEC, eos_token_id=SEP, sep_token_id=SEP, pad_token_id=PAD),
    )


class Budget:
    """Time-boxed training with warm-up and cosine decay over the wall-clock budget."""

    def __init__(self, opt: torch.optim.Optimizer, minutes: float, lr: float, warmup: int = 100):
        self.opt, self.seconds, self.lr, self.warmup = opt, minutes * 60, lr, warmup
        self.t0, self.step = time.time(), 0

    def tick(self) -> bool:
        frac = (time.time() - self.t0) / self.seconds
        if frac >= 1.0:
            return False
        self.step += 1
        scale = min(1.0, self.step / self.warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in self.opt.param_groups:
            g["lr"] = self.lr * max(scale, 0.02)
        return True


def batches(data: list[Scene], px: torch.Tensor, size: int, rng: random.Random):
    idx = list(range(len(data)))
    while True:
        rng.shuffle(idx)
        for i in range(0, len(idx) - size + 1, size):
            b = idx[i : i + size]
            yield [data[j] for j in b], px[b], b


def train_clip(data, px, tok, minutes, log, aux: float = 0.0, teacher: Teacher = NO_TEACHER) -> CLIPModel:
    """Contrastive; with `aux` > 0, plus `aux` × the loss of a `PatchHead` on the vision
    tower's patch states; with a `teacher`, plus its distillation loss."""
    model = CLIPModel(clip_config(tok.get_vocab_size())).train()
    width = model.config.vision_config.hidden_size
    patch_loss, distill = PatchLoss(width, data, aux), teacher.student(width)
    extra = patch_loss.parameters() + distill.parameters()
    opt = torch.optim.AdamW(list(model.parameters()) + extra, lr=1e-3, weight_decay=0.05)
    sched, rng = Budget(opt, minutes, 1e-3), random.Random(1)
    for scs, x, rows in batches(data, px, 128, rng):
        if not sched.tick():
            break
        # The canonical caption (every attribute) half of the time, a paraphrase otherwise.
        texts = [s.caption if rng.random() < 0.5 else rng.choice(s.captions) for s in scs]
        ids, mask = encode(tok, texts)
        out = model(input_ids=ids, attention_mask=mask, pixel_values=x, return_loss=True)
        states = out.vision_model_output.last_hidden_state
        loss = out.loss + patch_loss(states, rows) + distill(states, rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched.step % 50 == 0:
            log(f"clip step {sched.step} loss {loss.item():.3f}")
    return model.eval()


def train_caption(data, px, tok, minutes, log, aux: float = 0.0,
                  teacher: Teacher = NO_TEACHER) -> BlipForConditionalGeneration:
    """Teacher forcing on the canonical caption; with `aux` > 0, plus `aux` × the loss of a
    `PatchHead` on the vision tower's patch states; with a `teacher`, plus its distillation
    loss."""
    model = BlipForConditionalGeneration(blip_config(tok.get_vocab_size())).train()
    width = model.config.vision_config.hidden_size
    patch_loss, distill = PatchLoss(width, data, aux), teacher.student(width)
    extra = patch_loss.parameters() + distill.parameters()
    opt = torch.optim.AdamW(list(model.parameters()) + extra, lr=1e-3, weight_decay=0.05)
    sched, rng = Budget(opt, minutes, 1e-3), random.Random(2)
    for scs, x, rows in batches(data, px, 64, rng):
        if not sched.tick():
            break
        ids, mask = encode(tok, [s.caption for s in scs])
        ids[:, 0] = DEC
        labels = ids.masked_fill(mask == 0, -100)
        out = model(pixel_values=x, input_ids=ids, attention_mask=mask, labels=labels)
        loss = out.loss + patch_loss(out.image_embeds, rows) + distill(out.image_embeds, rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched.step % 50 == 0:
            log(f"caption step {sched.step} loss {loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def image_states(vision, px: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """The vision tower's output states of every scene, computed once: (N, patches + 1, D)."""
    return torch.cat([vision(pixel_values=px[i : i + chunk]).last_hidden_state for i in range(0, len(px), chunk)])


def train_vqa(data, px, tok, minutes, log, init: BlipForConditionalGeneration,
              scenes_per_step: int = 64, questions_per_scene: int = 4) -> BlipForQuestionAnswering:
    """Progressive recipe: the VQA model takes the trained captioner's vision tower, frozen (it
    already grounds shapes, colours and positions, as the captions show), and starts its
    question encoder and answer decoder from the captioner's text decoder. With the vision
    tower frozen its states are computed once per scene, so a training step costs only the
    two text models and can carry several questions of each scene: every question then has to
    be answered from the same image states, which is what teaches the question encoder to bind
    a named colour or shape to its region. The loss is the one `BlipForQuestionAnswering`
    computes (question encoder cross-attending to the image, answer decoder to the question)."""
    model = BlipForQuestionAnswering(blip_config(tok.get_vocab_size()))
    model.vision_model.load_state_dict(init.vision_model.state_dict())
    model.text_decoder.load_state_dict(init.text_decoder.state_dict())
    model.text_encoder.load_state_dict(init.text_decoder.bert.state_dict())
    model.vision_model.eval().requires_grad_(False)
    states = image_states(model.vision_model, px)
    log(f"vqa: image states of {len(data)} scenes cached, {tuple(states.shape)}")
    model.text_encoder.train()
    model.text_decoder.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    sched, rng = Budget(opt, minutes, 1e-3), random.Random(3)
    order = list(range(len(data)))
    while True:
        rng.shuffle(order)
        for i in range(0, len(order) - scenes_per_step + 1, scenes_per_step):
            if not sched.tick():
                return model.eval()
            rows, qa = [], []
            for j in order[i : i + scenes_per_step]:
                picked = rng.sample(data[j].qa, min(questions_per_scene, len(data[j].qa)))
                rows += [j] * len(picked)
                qa += picked
            img = states[rows]
            q, qmask = encode(tok, [q for _, q, _ in qa])
            answers = torch.tensor([[DEC] + tok.encode(a, add_special_tokens=False).ids + [SEP] for _, _, a in qa])
            question = model.text_encoder(input_ids=q, attention_mask=qmask, encoder_hidden_states=img,
                                          encoder_attention_mask=torch.ones(img.shape[:2], dtype=torch.long))[0]
            loss = model.text_decoder(input_ids=answers, encoder_hidden_states=question, encoder_attention_mask=qmask,
                                      labels=answers, reduction="mean").loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched.step % 50 == 0:
                log(f"vqa step {sched.step} loss {loss.item():.3f}")


@torch.no_grad()
def clip_embeddings(model: CLIPModel, tok, scs, px) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, txts = [], []
    for i in range(0, len(scs), 256):
        b = scs[i : i + 256]
        e = model.get_image_features(pixel_values=px[i : i + 256])
        e = getattr(e, "pooler_output", e)
        imgs.append(torch.nn.functional.normalize(e, dim=-1))
        ids, mask = encode(tok, [s.caption for s in b])
        t = model.get_text_features(input_ids=ids, attention_mask=mask)
        t = getattr(t, "pooler_output", t)
        txts.append(torch.nn.functional.normalize(t, dim=-1))
    return torch.cat(imgs), torch.cat(txts)


def train_fusion(clip: CLIPModel, data, px, tok, minutes, log) -> GatedFusionHead:
    """Gate trained so that fused(image+text), fused(image only) and fused(text only) of the
    same scene are nearest to each other: InfoNCE between the three views."""
    img, txt = clip_embeddings(clip, tok, data, px)
    head = GatedFusionHead(img.shape[1], gate="vector").train()
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    sched, rng = Budget(opt, minutes, 3e-3, warmup=20), random.Random(4)
    scale = clip.logit_scale.exp().detach()
    ones, zeros = torch.ones(256), torch.zeros(256)
    while sched.tick():
        b = torch.tensor(rng.sample(range(len(data)), 256))
        i, t = img[b], txt[b]
        both = head(i, t, ones, ones)
        views = [head(i, t, ones, zeros), head(i, t, zeros, ones)]
        target = torch.arange(256)
        loss = sum(torch.nn.functional.cross_entropy(scale * v @ both.T, target) for v in views)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched.step % 100 == 0:
            log(f"fusion step {sched.step} loss {loss.item():.3f}")
    return head.eval()


def save_part(model, out: Path, tok: Tokenizer, processor) -> None:
    """Write a part as a standard checkpoint, its weights stored in f16 (computed in f32:
    `models/tools/store_half.py`)."""
    model.save_pretrained(str(out))
    store_half(out)
    tok.save(str(out / "tokenizer.json"))
    processor.save_pretrained(str(out))


def write_bundle_toml(out: Path) -> None:
    labels = SHAPES + list(COLOURS)
    (out / "bundle.toml").write_text(
        f'id = "shapes"\nversion = "{VERSION}"\n\n'
        '# Dual encoder: embeddings, image-text match, tags.\n[clip]\npath = "clip"\n\n'
        '# Captions.\n[caption]\npath = "blip-caption"\n\n'
        '# Answers to questions about the image.\n[vqa]\npath = "blip-vqa"\n\n'
        '# Gated fusion of the image and text embeddings.\n[fusion]\npath = "fusion"\n\n'
        '[tags]\ntemplate = "a {}"\n'
        f"labels = {json.dumps(labels)}\n\n"
        "[generation]\nmax_new_tokens = 32\nnum_beams = 1\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models/shapes"))
    ap.add_argument("--train-scenes", type=int, default=12000)
    ap.add_argument("--minutes", type=float, nargs=4, default=[20.0, 32.0, 6.0, 1.5],
                    metavar=("CLIP", "CAPTION", "VQA", "FUSION"))
    ap.add_argument("--teacher-minutes", type=float, default=5.0, help="the CNN teacher's budget (0: no teacher)")
    ap.add_argument("--distill", type=float, default=1.0, help="weight of the teacher's distillation loss")
    ap.add_argument("--aux", type=float, default=1.0, help="weight of the per-patch loss (PatchLoss)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    log_lines: list[str] = []

    def log(msg: str) -> None:
        line = f"[{time.time() - t0:7.1f}s] {msg}"
        print(line, flush=True)
        log_lines.append(line)

    tok = build_tokenizer()
    data = scenes(1000, args.train_scenes)
    px = pixels(data)
    log(f"{len(data)} training scenes, pixels {tuple(px.shape)}")
    clip_proc, blip_proc = processors_()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    teacher = Teacher.fit(data, px, args.teacher_minutes, args.distill, log)
    clip = train_clip(data, px, tok, args.minutes[0], log, aux=args.aux, teacher=teacher)
    save_part(clip, out / "clip", tok, clip_proc)
    head = train_fusion(clip, data, px, tok, args.minutes[3], log)
    head.save(out / "fusion")
    caption = train_caption(data, px, tok, args.minutes[1], log, aux=args.aux, teacher=teacher)
    save_part(caption, out / "blip-caption", tok, blip_proc)
    vqa = train_vqa(data, px, tok, args.minutes[2], log, init=caption)
    save_part(vqa, out / "blip-vqa", tok, blip_proc)
    write_bundle_toml(out)
    # The tag heads on the trained parts (imported here: models.tags imports this module).
    from models import tags

    tag_head, sources = tags.calibrate(out, TAG_SEEDS[0], 3000, TAG_SEEDS[1], 0.8)
    tags.write(out, tag_head, sources)
    log(f"tag heads fitted (seeds {TAG_SEEDS}): {sources}")
    # safetensors writes 0600; the bundle is read by other users (the image runs as uid 65532).
    for path in out.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    log("done")
    (out / "training.json").write_text(json.dumps({
        "command": "python -m models.train --out models/shapes",
        "minutes_per_part": dict(zip(["clip", "caption", "vqa", "fusion"], args.minutes)),
        "teacher_minutes": args.teacher_minutes,
        "distill": args.distill,
        "aux": args.aux,
        "train_scenes": args.train_scenes,
        "train_seed": 1000,
        "threads": args.threads,
        "wall_seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "log_tail": log_lines[-12:],
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
