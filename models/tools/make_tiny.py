"""Build tiny random checkpoints and their transformers reference outputs.

The Rust runtime (`workers/model`) is checked against these files: every architecture at two
or more shapes, written with `save_pretrained` exactly as real checkpoints are, plus the
outputs transformers computes for them (embeddings, logits, greedy and beam token ids).

Run from the repository root (needs torch + transformers, see models/requirements.txt):

    python -m models.tools.make_tiny --out models/fixtures/tiny

The output is deterministic for a given torch/transformers version; the committed fixtures
record the versions that produced them in `versions.json`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    BlipConfig,
    BlipForConditionalGeneration,
    BlipForQuestionAnswering,
    CLIPConfig,
    CLIPModel,
    SiglipConfig,
    SiglipModel,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from models.fusion import GatedFusionHead

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[DEC]", "[ENC]", "[MASK]"]
WORDS = (
    "a an the small large big tiny red green blue yellow purple orange white black gray "
    "circle square triangle star cross heart hexagon diamond left right top bottom centre "
    "center of to and on in is there what colour color shape how many where above below "
    "next with one two three yes no photo picture image scene background"
).split()
PUNCT = ["?", ".", ",", "!"]

TEXTS = [
    "a small red circle",
    "what colour is the large square ?",
    "two blue triangles to the left of a yellow star on a gray background",
    "yes",
]
# Shape "a" decodes to the token limit; shape "b" makes [SEP] likely so sequences end early.
CAPTION_EOS_BOOST = [0.0, 1.6]
VQA_EOS_BOOST = [0.0, 3.0]
QUESTIONS = ["what colour is the circle ?", "how many shapes are there in the picture ?"]


def build_tokenizer() -> Tokenizer:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS + PUNCT)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.add_special_tokens(SPECIALS)
    return tok


def randomise(model: torch.nn.Module, seed: int, std: float = 0.15) -> None:
    """Re-draw every weight with a spread wide enough that greedy decoding has no near-ties."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            lname = name.lower()
            noise = torch.randn(p.shape, generator=gen)
            if "layernorm" in lname or "layer_norm" in lname or "layrnorm" in lname:
                p.copy_((1.0 + 0.1 * noise) if name.endswith("weight") else 0.1 * noise)
            elif name.endswith("logit_scale"):
                continue
            else:
                p.copy_(std * noise)


def save_common(out: Path, tok: Tokenizer, processor) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    processor.save_pretrained(str(out))


def encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text).ids


def clip_fixture(out: Path, tok: Tokenizer, seed: int, vision: dict, text: dict, proj: int) -> None:
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=tok.get_vocab_size(),
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
            **text,
        ),
        vision_config=vision,
        projection_dim=proj,
    )
    model = CLIPModel(cfg).eval()
    randomise(model, seed)
    model.save_pretrained(str(out))
    size = vision["image_size"]
    save_common(
        out,
        tok,
        CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
    )

    gen = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn((3, 3, size, size), generator=gen)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels)
        img = img.pooler_output if hasattr(img, "pooler_output") else img
        img = img / img.norm(dim=-1, keepdim=True)
        singles = []
        for t in TEXTS:
            ids = torch.tensor([encode(tok, t)])
            e = model.get_text_features(input_ids=ids)
            e = e.pooler_output if hasattr(e, "pooler_output") else e
            singles.append(e[0] / e[0].norm())
        txt = torch.stack(singles)
        logits_per_image = model.logit_scale.exp() * img @ txt.T
    save_file(
        {
            "pixel_values": pixels.contiguous(),
            "image_embeds": img.contiguous(),
            "text_embeds": txt.contiguous(),
            "logits_per_image": logits_per_image.contiguous(),
        },
        str(out / "reference.safetensors"),
    )
    (out / "reference.json").write_text(
        json.dumps({"texts": TEXTS, "input_ids": [encode(tok, t) for t in TEXTS]}, indent=1)
    )


def siglip_fixture(out: Path, tok: Tokenizer, seed: int, vision: dict, text: dict) -> None:
    """SigLIP pads every text to max_position_embeddings and pools the last position."""
    torch.manual_seed(seed)
    cfg = SiglipConfig(
        text_config=dict(vocab_size=tok.get_vocab_size(), pad_token_id=0, eos_token_id=3, bos_token_id=2, **text),
        vision_config=vision,
    )
    model = SiglipModel(cfg).eval()
    randomise(model, seed)
    model.save_pretrained(str(out))
    size = vision["image_size"]
    save_common(out, tok, BlipImageProcessorPil(size={"height": size, "width": size}))
    gen = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn((3, 3, size, size), generator=gen)
    max_len = text["max_position_embeddings"]
    with torch.no_grad():
        out_ = model(
            pixel_values=pixels,
            input_ids=torch.tensor([(encode(tok, t) + [0] * max_len)[:max_len] for t in TEXTS]),
        )
    save_file(
        {
            "pixel_values": pixels.contiguous(),
            "image_embeds": out_.image_embeds.contiguous(),
            "text_embeds": out_.text_embeds.contiguous(),
            "logits_per_image": out_.logits_per_image.contiguous(),
        },
        str(out / "reference.safetensors"),
    )
    (out / "reference.json").write_text(
        json.dumps({"texts": TEXTS, "input_ids": [encode(tok, t) for t in TEXTS]}, indent=1)
    )


def blip_config(tok: Tokenizer, vision: dict, text: dict) -> BlipConfig:
    return BlipConfig(
        vision_config=vision,
        text_config=dict(
            vocab_size=tok.get_vocab_size(),
            encoder_hidden_size=vision["hidden_size"],
            bos_token_id=4,
            eos_token_id=3,
            sep_token_id=3,
            pad_token_id=0,
            **text,
        ),
    )


def gen_ids(seqs: torch.Tensor) -> list[list[int]]:
    return [[int(x) for x in row] for row in seqs]


def boost_eos(model: torch.nn.Module, boost: float) -> None:
    """Raise the [SEP] logit so that some generated sequences end early (tests EOS handling)."""
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[3] += boost


def blip_caption_fixture(
    out: Path, tok: Tokenizer, seed: int, vision: dict, text: dict, eos_boost: float
) -> None:
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(blip_config(tok, vision, text)).eval()
    randomise(model, seed)
    boost_eos(model, eos_boost)
    model.save_pretrained(str(out))
    size = vision["image_size"]
    save_common(out, tok, BlipImageProcessorPil(size={"height": size, "width": size}))

    gen = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn((2, 3, size, size), generator=gen)
    forced = torch.tensor([[4, 9, 20, 21, 3], [4, 12, 13, 30, 7]])
    greedy, beam = [], []
    with torch.no_grad():
        image_embeds = model.vision_model(pixel_values=pixels)[0]
        logits = model.text_decoder(
            input_ids=forced,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long),
        ).logits
        for i in range(pixels.shape[0]):
            px = pixels[i : i + 1]
            greedy += gen_ids(model.generate(pixel_values=px, max_new_tokens=8, do_sample=False))
            beam += gen_ids(
                model.generate(pixel_values=px, max_new_tokens=8, num_beams=3, do_sample=False)
            )
    save_file(
        {
            "pixel_values": pixels.contiguous(),
            "image_embeds": image_embeds.contiguous(),
            "forced_logits": logits.contiguous(),
        },
        str(out / "reference.safetensors"),
    )
    (out / "reference.json").write_text(
        json.dumps(
            {
                "forced_ids": forced.tolist(),
                "max_new_tokens": 8,
                "greedy_ids": greedy,
                "beam3_ids": beam,
            },
            indent=1,
        )
    )


def question_states(model: BlipForQuestionAnswering, ids: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """The question encoder's states, cross-attending to the image: what the answer decoder reads."""
    image_embeds = model.vision_model(pixel_values=px)[0]
    return model.text_encoder(
        input_ids=ids,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long),
    )[0]


def blip_vqa_fixture(
    out: Path, tok: Tokenizer, seed: int, vision: dict, text: dict, eos_boost: float
) -> None:
    torch.manual_seed(seed)
    model = BlipForQuestionAnswering(blip_config(tok, vision, text)).eval()
    randomise(model, seed)
    boost_eos(model, eos_boost)
    model.save_pretrained(str(out))
    size = vision["image_size"]
    save_common(out, tok, BlipImageProcessorPil(size={"height": size, "width": size}))

    gen = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn((2, 3, size, size), generator=gen)
    tensors = {"pixel_values": pixels.contiguous()}
    greedy, beam, qids = [], [], []
    with torch.no_grad():
        for i, q in enumerate(QUESTIONS):
            px = pixels[i : i + 1]
            ids = torch.tensor([encode(tok, q)])
            qids.append(ids[0].tolist())
            q_embeds = question_states(model, ids, px)
            tensors[f"question_embeds_{i}"] = q_embeds[0].contiguous()
            forced = torch.tensor([[4, 40 + i, 41, 3]])
            logits = model.text_decoder(
                input_ids=forced,
                encoder_hidden_states=q_embeds,
                encoder_attention_mask=torch.ones(q_embeds.shape[:-1], dtype=torch.long),
            ).logits
            tensors[f"forced_logits_{i}"] = logits[0].contiguous()
            greedy += gen_ids(
                model.generate(input_ids=ids, pixel_values=px, max_new_tokens=6, do_sample=False)
            )
            beam += gen_ids(
                model.generate(
                    input_ids=ids, pixel_values=px, max_new_tokens=6, num_beams=3, do_sample=False
                )
            )
    save_file(tensors, str(out / "reference.safetensors"))
    (out / "reference.json").write_text(
        json.dumps(
            {
                "questions": QUESTIONS,
                "question_ids": qids,
                "forced_ids": [[4, 40, 41, 3], [4, 41, 41, 3]],
                "max_new_tokens": 6,
                "greedy_ids": greedy,
                "beam3_ids": beam,
            },
            indent=1,
        )
    )


def fusion_fixture(out: Path, seed: int, dim: int, gate: str) -> None:
    torch.manual_seed(seed)
    head = GatedFusionHead(dim, gate=gate).eval()
    randomise(head, seed, std=0.5)
    head.save(out)
    gen = torch.Generator().manual_seed(seed + 1)
    img = torch.nn.functional.normalize(torch.randn((4, dim), generator=gen), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn((4, dim), generator=gen), dim=-1)
    img_mask = torch.tensor([1.0, 1.0, 0.0, 1.0])
    txt_mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    with torch.no_grad():
        fused = head(img, txt, img_mask, txt_mask)
    save_file(
        {
            "image_embeds": img,
            "text_embeds": txt,
            "image_mask": img_mask,
            "text_mask": txt_mask,
            "fused": fused.contiguous(),
        },
        str(out / "reference.safetensors"),
    )


def _png16(path: Path, rgb16: np.ndarray) -> None:
    """Write a 16-bit RGB PNG (PIL cannot): raw rows, filter 0, zlib."""
    import struct
    import zlib

    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def preprocess_fixture(out: Path) -> None:
    """Images in every accepted format and the HF (PIL backend) processor outputs for them.

    The reference applies EXIF orientation first, as transformers' `load_image` does."""
    from PIL import ImageOps

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:151, 0:97]
    base = np.stack([xx * 255 // 96, yy * 255 // 150, (xx + yy) % 256], axis=-1).astype(np.uint8)
    base = np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    rgb = Image.fromarray(base)  # 97 wide, 151 high: odd sizes, portrait
    wide = Image.fromarray(np.ascontiguousarray(np.transpose(base, (1, 0, 2))))  # 151 x 97
    # A larger smooth "photo" so that downscaling is strong (antialiasing matters).
    py, px = np.mgrid[0:240, 0:320]
    photo = np.stack(
        [
            128 + 100 * np.sin(px / 23.0) * np.cos(py / 31.0),
            128 + 90 * np.cos(px / 41.0 + py / 17.0),
            (px * 255 // 319 + py * 255 // 239) // 2,
        ],
        axis=-1,
    ).clip(0, 255).astype(np.uint8)
    photo = Image.fromarray(photo)
    # 640x480: large enough for a 1/4 DCT-scaled decode towards a 64-pixel model input.
    ly, lx = np.mgrid[0:480, 0:640]
    large = np.stack(
        [128 + 100 * np.sin(lx / 47.0) * np.cos(ly / 61.0), 128 + 90 * np.cos(lx / 83.0 + ly / 35.0),
         (lx * 255 // 639 + ly * 255 // 479) // 2],
        axis=-1,
    ).clip(0, 255).astype(np.uint8)

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    alpha = rgb.copy()
    alpha.putalpha(Image.fromarray((yy * 255 // 150).astype(np.uint8)))
    frames = [rgb.convert("P", palette=Image.ADAPTIVE, colors=64), wide.resize((97, 151)).convert("P")]

    rgb.save(out / "portrait.png")
    wide.save(out / "landscape.png")
    rgb.resize((40, 30), Image.NEAREST).save(out / "small.png")  # upscaling path
    alpha.save(out / "rgba.png")
    rgb.convert("P", palette=Image.ADAPTIVE, colors=32).save(out / "palette.png")
    _png16(out / "rgb16.png", base.astype(np.uint16) * 256 + rng.integers(0, 256, base.shape).astype(np.uint16))
    photo.save(out / "photo.jpg", quality=92, subsampling=0)
    Image.fromarray(large).save(out / "large.jpg", quality=90, subsampling=0)
    Image.fromarray(large).save(out / "large_rotated.jpg", quality=90, subsampling=0, exif=exif)
    photo.save(out / "photo_420.jpg", quality=85, subsampling=2)
    photo.save(out / "progressive.jpg", quality=90, progressive=True, subsampling=0)
    photo.convert("L").save(out / "gray.jpg", quality=90)
    photo.convert("CMYK").save(out / "cmyk.jpg", quality=95)
    photo.save(out / "exif_rotated.jpg", quality=92, subsampling=0, exif=exif)
    photo.save(out / "lossless.webp", lossless=True)
    photo.save(out / "lossy.webp", quality=80)
    frames[0].save(out / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rgb.save(out / "image.bmp")

    clip = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    blip = BlipImageProcessorPil(size={"height": 48, "width": 48})
    clip.save_pretrained(str(out / "clip"))
    blip.save_pretrained(str(out / "blip"))
    tensors = {}
    names = sorted(p.name for p in out.iterdir() if p.is_file() and p.suffix != ".safetensors")
    for name in names:
        im = ImageOps.exif_transpose(Image.open(out / name))
        stem = name.replace(".", "_")
        tensors[f"clip/{stem}"] = torch.tensor(clip(im, return_tensors="np")["pixel_values"][0])
        tensors[f"blip/{stem}"] = torch.tensor(blip(im, return_tensors="np")["pixel_values"][0])
    save_file(tensors, str(out / "reference.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models/fixtures/tiny"))
    args = ap.parse_args()
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok = build_tokenizer()

    clip_fixture(
        out / "clip-a",
        tok,
        seed=11,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    image_size=32, patch_size=8, hidden_act="quick_gelu"),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=24, hidden_act="quick_gelu"),
        proj=24,
    )
    clip_fixture(
        out / "clip-b",
        tok,
        seed=12,
        vision=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6,
                    image_size=30, patch_size=6, hidden_act="gelu"),
        text=dict(hidden_size=40, intermediate_size=56, num_hidden_layers=1, num_attention_heads=5,
                  max_position_embeddings=20, hidden_act="gelu"),
        proj=16,
    )
    siglip_fixture(
        out / "siglip-a",
        tok,
        seed=51,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    image_size=32, patch_size=8),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=20),
    )
    siglip_fixture(
        out / "siglip-b",
        tok,
        seed=52,
        vision=dict(hidden_size=40, intermediate_size=48, num_hidden_layers=1, num_attention_heads=5,
                    image_size=30, patch_size=6, hidden_act="gelu"),
        text=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=3,
                  max_position_embeddings=24, projection_size=40),
    )
    blip_shapes = [
        (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8),
         dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=32)),
        (dict(hidden_size=24, intermediate_size=40, num_hidden_layers=1, num_attention_heads=3,
              image_size=30, patch_size=10),
         dict(hidden_size=40, intermediate_size=48, num_hidden_layers=3, num_attention_heads=5,
              max_position_embeddings=24)),
    ]
    for i, (vision, text) in enumerate(blip_shapes):
        blip_caption_fixture(out / f"blip-caption-{'ab'[i]}", tok, 21 + i, vision, text, CAPTION_EOS_BOOST[i])
    # BLIP VQA feeds the question encoder's output to the decoder's cross-attention, whose
    # input width is the vision width: transformers only runs it with equal widths.
    vqa_shapes = [
        blip_shapes[0],
        (dict(hidden_size=40, intermediate_size=48, num_hidden_layers=1, num_attention_heads=5,
              image_size=30, patch_size=10),
         dict(hidden_size=40, intermediate_size=56, num_hidden_layers=3, num_attention_heads=4,
              max_position_embeddings=24)),
    ]
    for i, (vision, text) in enumerate(vqa_shapes):
        blip_vqa_fixture(out / f"blip-vqa-{'ab'[i]}", tok, 31 + i, vision, text, VQA_EOS_BOOST[i])
    fusion_fixture(out / "fusion-vector", 41, 24, "vector")
    fusion_fixture(out / "fusion-scalar", 42, 16, "scalar")
    preprocess_fixture(out / "preprocess")
    # A bundle of tiny parts, for the runtime API tests.
    (out / "bundle.toml").write_text(
        'id = "tiny"\nversion = "0.0.1"\n'
        '[clip]\npath = "clip-a"\n[caption]\npath = "blip-caption-a"\n'
        '[vqa]\npath = "blip-vqa-a"\n[fusion]\npath = "fusion-vector"\n'
        '[tags]\ntemplate = "a {} ."\nlabels = ["circle", "square", "triangle", "star"]\n'
        "threshold = 0.0\n"
        "[generation]\nmax_new_tokens = 6\nnum_beams = 1\n"
    )
    (out / "versions.json").write_text(
        json.dumps({"torch": torch.__version__, "transformers": transformers.__version__}, indent=1)
    )


if __name__ == "__main__":
    main()
