"""The ONNX exporter on freshly generated random checkpoints: ONNX Runtime (f32) against
transformers — embeddings and logits within 1e-4, greedy token ids identical — and the int8
graphs run and stay close.

Run from the repository root: `python -m pytest models/tests -q` (scripts/test.sh does).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from models import export_onnx
from models.onnx_run import Decoder, normalize, pad, session
from models.tools import make_tiny

TOL = 1e-4

# Two shapes per architecture, other seeds than the committed fixtures.
CLIP_SHAPES = [
    (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          image_size=32, patch_size=8, hidden_act="quick_gelu"),
     dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          max_position_embeddings=24, hidden_act="quick_gelu"), 24),
    (dict(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6,
          image_size=30, patch_size=6, hidden_act="gelu"),
     dict(hidden_size=40, intermediate_size=56, num_hidden_layers=1, num_attention_heads=5,
          max_position_embeddings=20, hidden_act="gelu"), 16),
]
BLIP_SHAPES = [
    (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          image_size=32, patch_size=8),
     dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          max_position_embeddings=32)),
    (dict(hidden_size=24, intermediate_size=40, num_hidden_layers=1, num_attention_heads=3,
          image_size=30, patch_size=10),
     dict(hidden_size=40, intermediate_size=48, num_hidden_layers=3, num_attention_heads=5,
          max_position_embeddings=24)),
]
VQA_SHAPES = [
    BLIP_SHAPES[0],
    (dict(hidden_size=40, intermediate_size=48, num_hidden_layers=1, num_attention_heads=5,
          image_size=30, patch_size=10),
     dict(hidden_size=40, intermediate_size=56, num_hidden_layers=3, num_attention_heads=4,
          max_position_embeddings=24)),
]


def close(name, a, b, tol=TOL):
    d = float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))
    assert d <= tol, f"{name}: max abs diff {d} > {tol}"


def norm(x):
    return normalize(x)


@pytest.fixture(scope="module")
def tok():
    return make_tiny.build_tokenizer()


@pytest.mark.parametrize("shape", range(len(CLIP_SHAPES)))
def test_clip(tmp_path, tok, shape):
    vision, text, proj = CLIP_SHAPES[shape]
    d = tmp_path / "clip"
    make_tiny.clip_fixture(d, tok, seed=311 + shape, vision=vision, text=text, proj=proj)
    export_onnx.export(d, int8=True, quiet=True)
    ref = load_file(str(d / "reference.safetensors"))
    j = json.loads((d / "reference.json").read_text())

    img = session(d, "vision").run(None, {"pixel_values": ref["pixel_values"]})[0]
    close("image_embeds", norm(img), ref["image_embeds"])
    ids, mask = pad(j["input_ids"])
    assert mask.sum(1).min() != mask.sum(1).max(), "texts must differ in length"
    txt = session(d, "text").run(None, {"input_ids": ids, "attention_mask": mask})[0]
    close("text_embeds (padded batch)", norm(txt), ref["text_embeds"])

    img8 = session(d, "vision", "int8").run(None, {"pixel_values": ref["pixel_values"]})[0]
    txt8 = session(d, "text", "int8").run(None, {"input_ids": ids, "attention_mask": mask})[0]
    for a, b in [(img8, img), (txt8, txt)]:
        cos = (norm(a) * norm(b)).sum(-1)
        assert cos.min() > 0.9, f"int8 cosine to f32 {cos}"


@pytest.mark.parametrize("shape", range(len(BLIP_SHAPES)))
def test_blip_caption(tmp_path, tok, shape):
    vision, text = BLIP_SHAPES[shape]
    d = tmp_path / "cap"
    make_tiny.blip_caption_fixture(d, tok, 321 + shape, vision, text, make_tiny.CAPTION_EOS_BOOST[shape])
    export_onnx.export(d, int8=True, quiet=True)
    ref = load_file(str(d / "reference.safetensors"))
    j = json.loads((d / "reference.json").read_text())

    states = session(d, "vision").run(None, {"pixel_values": ref["pixel_values"]})[0]
    close("image_states", states, ref["image_embeds"])
    dec = Decoder(d)
    # Teacher forcing from an empty cache: every position's logits (causal mask in the graph).
    forced = np.array(j["forced_ids"])
    st = dec.start(states, np.ones(states.shape[:2]))
    for t in range(forced.shape[1]):
        logits = dec.run(forced[:, t : t + 1], st)
        close(f"forced logits position {t}", logits, ref["forced_logits"][:, t])
    # The whole prefix in one step gives the last position's logits.
    st = dec.start(states, np.ones(states.shape[:2]))
    close("forced logits, one step", dec.run(forced, st), ref["forced_logits"][:, -1])
    assert dec.greedy(states, np.ones(states.shape[:2]), j["max_new_tokens"]) == j["greedy_ids"]


@pytest.mark.parametrize("shape", range(len(VQA_SHAPES)))
def test_blip_vqa(tmp_path, tok, shape):
    vision, text = VQA_SHAPES[shape]
    d = tmp_path / "vqa"
    make_tiny.blip_vqa_fixture(d, tok, 331 + shape, vision, text, make_tiny.VQA_EOS_BOOST[shape])
    export_onnx.export(d, int8=True, quiet=True)
    ref = load_file(str(d / "reference.safetensors"))
    j = json.loads((d / "reference.json").read_text())

    states = session(d, "vision").run(None, {"pixel_values": ref["pixel_values"]})[0]
    ids, mask = pad(j["question_ids"])
    assert mask.sum(1).min() != mask.sum(1).max()
    q = session(d, "question_encoder").run(
        None, {"input_ids": ids, "attention_mask": mask, "image_states": states}
    )[0]
    for i, qi in enumerate(j["question_ids"]):
        close(f"question_embeds_{i}", q[i, : len(qi)], ref[f"question_embeds_{i}"])
    dec = Decoder(d)
    for i, qi in enumerate(j["question_ids"]):
        st = dec.start(q[i : i + 1, : len(qi)], np.ones((1, len(qi))))
        forced = np.array([j["forced_ids"][i]])
        for t in range(forced.shape[1]):
            close(f"forced logits {i}/{t}", dec.run(forced[:, t : t + 1], st)[0], ref[f"forced_logits_{i}"][t])
    # Both questions in one padded batch: the encoder mask hides the padding.
    assert dec.greedy(q, mask, j["max_new_tokens"]) == j["greedy_ids"]


def test_manifest_records_versions_and_fusions(tmp_path, tok):
    vision, text, proj = CLIP_SHAPES[0]
    d = tmp_path / "clip"
    make_tiny.clip_fixture(d, tok, seed=399, vision=vision, text=text, proj=proj)
    man = export_onnx.export(d, quiet=True)
    assert man["opset"] == export_onnx.OPSET
    assert man["exporter"]["torch"] == torch.__version__.split("+")[0]
    names = {g["name"] for g in man["graphs"]}
    assert names == {"vision", "text"}
    vision_graph = next(g for g in man["graphs"] if g["name"] == "vision")
    assert vision_graph["fusions"].get("Attention", 0) == vision["num_hidden_layers"]
    assert [i["name"] for i in vision_graph["inputs"]] == ["pixel_values"]
    assert vision_graph["inputs"][0]["shape"][0] == "batch"
