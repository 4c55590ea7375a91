"""Export Hugging Face CLIP / BLIP captioning / BLIP VQA checkpoints to ONNX graphs.

    python -m models.export_onnx --model DIR [--int8] [--fp16] [--no-optimize]

`DIR` is a checkpoint folder as `save_pretrained` writes it (`config.json` +
`model.safetensors`): the `shapes` bundle's parts, the tiny fixtures, the real-size
checkpoints of `benches/make_models.py`, or a real `openai/clip-*` / `Salesforce/blip-*`
folder. The graphs are written beside the safetensors under `DIR/onnx/`, with a manifest
(`onnx/manifest.json`) naming each graph, its inputs and outputs, the opset, the exporter's
versions, the transformer-optimiser fusions and a hash of the weights it was made from.

Graphs (f32, dynamic batch and sequence axes):

| architecture | graph | inputs → outputs |
|---|---|---|
| CLIP | `vision` | `pixel_values` (B,3,H,W) → `image_embeds` (B,P) projected, not normalised |
| CLIP | `text` | `input_ids`, `attention_mask` (B,T) int64 → `text_embeds` (B,P) |
| BLIP | `vision` | `pixel_values` → `image_states` (B,S,D), after the post-LayerNorm |
| BLIP | `decoder_cross` | `encoder_states` (B,S,De) → `cross_key_<i>`, `cross_value_<i>` (B,H,S,Dh) |
| BLIP | `decoder_step` | `input_ids` (B,t), `encoder_mask` (B,S) f32, `past_key_<i>`, `past_value_<i>` (B,H,P,Dh), `cross_key_<i>`, `cross_value_<i>` → `logits` (B,V) of the last position, `present_key_<i>`, `present_value_<i>` (B,H,P+t,Dh) |
| BLIP VQA | `question_encoder` | `input_ids`, `attention_mask` (B,T), `image_states` (B,S,D) → `question_states` (B,T,D) |

The BLIP text graphs are small wrapper modules over the checkpoint's own submodules (its
Linear, LayerNorm and embedding weights) with eager attention written out and the caches as
flat tensors: transformers 5 keeps its cache in objects that do not export, and no exporter
supports BLIP generation. The cross-attention keys and values of the encoder states are
computed once per batch (`decoder_cross`), not once per token. The Rust runtime drives the
step graph with its own greedy and beam search (`workers/model/src/generate.rs`).

`--int8` adds dynamically quantised graphs (`*.int8.onnx`: int8 weights per output channel
for MatMul/Gemm, activations quantised at run time; LayerNorm, GELU, softmax and residual
adds stay in float); `--fp16` adds FP16 graphs for GPUs (`*.fp16.onnx`, inputs and outputs
kept in f32). Both are made from the optimised f32 graph.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17
NEG = torch.finfo(torch.float32).min


# --------------------------------------------------------------------------------------------
# Wrapper modules
# --------------------------------------------------------------------------------------------


class ClipVision(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection

    def forward(self, pixel_values):
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return self.visual_projection(pooled)


class ClipText(nn.Module):
    """CLIP text tower written out: causal + key-padding mask, EOS pooling as transformers."""

    def __init__(self, model):
        super().__init__()
        tm = model.text_model
        self.embeddings = tm.embeddings
        self.layers = tm.encoder.layers
        self.final_layer_norm = tm.final_layer_norm
        self.text_projection = model.text_projection
        self.eos_token_id = tm.eos_token_id
        self.heads = model.config.text_config.num_attention_heads

    def forward(self, input_ids, attention_mask):
        b, t = input_ids.shape
        x = self.embeddings(input_ids=input_ids)
        pos = torch.arange(t, device=input_ids.device)
        causal = (pos[None, :] > pos[:, None]).to(x.dtype) * NEG
        pad = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * NEG
        mask = causal[None, None, :, :] + pad
        for layer in self.layers:
            h = layer.layer_norm1(x)
            a = layer.self_attn
            x = x + _mha(a.q_proj, a.k_proj, a.v_proj, a.out_proj, h, h, mask, self.heads, True)
            x = x + layer.mlp(layer.layer_norm2(x))
        x = self.final_layer_norm(x)
        if self.eos_token_id == 2:
            # Legacy configs: transformers pools at the argmax of the ids.
            idx = input_ids.to(torch.int64).argmax(dim=-1)
        else:
            idx = (input_ids.to(torch.int64) == self.eos_token_id).to(torch.int64).argmax(dim=-1)
        pooled = x[torch.arange(b, device=x.device), idx]
        return self.text_projection(pooled)


def _split(x, heads):
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def _merge(x):
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def _attend(q, k, v, mask):
    """Eager scaled dot-product attention (q, k, v in (B,H,T,Dh)); mask is additive."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def _mha(q_lin, k_lin, v_lin, out_lin, x, kv, mask, heads, scale_q):
    if scale_q:
        # CLIP scales the queries before the product (same result, its own op order).
        dh = x.shape[-1] // heads
        q = _split(q_lin(x) * dh**-0.5, heads)
        scores = torch.matmul(q, _split(k_lin(kv), heads).transpose(-1, -2))
        if mask is not None:
            scores = scores + mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), _split(v_lin(kv), heads))
    else:
        ctx = _attend(_split(q_lin(x), heads), _split(k_lin(kv), heads), _split(v_lin(kv), heads), mask)
    return out_lin(_merge(ctx))


class BlipVision(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.vision_model = model.vision_model

    def forward(self, pixel_values):
        return self.vision_model(pixel_values=pixel_values).last_hidden_state


class _BlipText(nn.Module):
    """Shared pieces of BLIP's BERT-style text model (post-LayerNorm layers)."""

    def __init__(self, bert, heads):
        super().__init__()
        self.embeddings = bert.embeddings
        self.layers = bert.encoder.layer
        self.heads = heads

    def embed(self, input_ids, past):
        t = input_ids.shape[1]
        e = self.embeddings
        pos = torch.arange(t, device=input_ids.device) + past
        x = e.word_embeddings(input_ids) + e.position_embeddings(pos)[None, :, :]
        return e.LayerNorm(x)

    def self_block(self, layer, x, k, v, mask):
        a = layer.attention
        ctx = _merge(_attend(_split(a.self.query(x), self.heads), k, v, mask))
        return a.output.LayerNorm(a.output.dense(ctx) + x)

    def cross_block(self, layer, x, k, v, mask):
        a = layer.crossattention
        ctx = _merge(_attend(_split(a.self.query(x), self.heads), k, v, mask))
        return a.output.LayerNorm(a.output.dense(ctx) + x)

    @staticmethod
    def ffn(layer, x):
        h = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
        return layer.output.LayerNorm(layer.output.dense(h) + x)

    def kv(self, attn_self, states):
        return _split(attn_self.key(states), self.heads), _split(attn_self.value(states), self.heads)


class BlipDecoderCross(nn.Module):
    """Cross-attention keys and values of every decoder layer, once per batch of states."""

    def __init__(self, decoder, heads):
        super().__init__()
        self.text = _BlipText(decoder.bert, heads)

    def forward(self, encoder_states):
        out = []
        for layer in self.text.layers:
            k, v = self.text.kv(layer.crossattention.self, encoder_states)
            out += [k, v]
        return tuple(out)


class BlipDecoderStep(nn.Module):
    """One decoding step of `BlipTextLMHeadModel` with flat self-attention K/V in and out."""

    def __init__(self, decoder, heads):
        super().__init__()
        self.text = _BlipText(decoder.bert, heads)
        self.cls = decoder.cls

    def forward(self, input_ids, encoder_mask, *flat):
        n = len(self.text.layers)
        past, cross = flat[: 2 * n], flat[2 * n :]
        t = input_ids.shape[1]
        p = past[0].shape[2]
        x = self.text.embed(input_ids, p)
        j = torch.arange(t, device=x.device)[:, None] + p
        i = torch.arange(p + t, device=x.device)[None, :]
        causal = ((i > j).to(x.dtype) * NEG)[None, None, :, :]
        cmask = ((1.0 - encoder_mask.to(x.dtype)) * NEG)[:, None, None, :]
        present = []
        for li, layer in enumerate(self.text.layers):
            k, v = self.text.kv(layer.attention.self, x)
            k = torch.cat([past[2 * li], k], dim=2)
            v = torch.cat([past[2 * li + 1], v], dim=2)
            present += [k, v]
            x = self.text.self_block(layer, x, k, v, causal)
            x = self.text.cross_block(layer, x, cross[2 * li], cross[2 * li + 1], cmask)
            x = self.text.ffn(layer, x)
        logits = self.cls(x[:, -1, :])
        return (logits, *present)


class BlipQuestionEncoder(nn.Module):
    """VQA question encoder: bidirectional over the padded question, cross-attends the image."""

    def __init__(self, model, heads):
        super().__init__()
        self.text = _BlipText(model.text_encoder, heads)

    def forward(self, input_ids, attention_mask, image_states):
        x = self.text.embed(input_ids, 0)
        mask = ((1.0 - attention_mask.to(x.dtype)) * NEG)[:, None, None, :]
        for layer in self.text.layers:
            k, v = self.text.kv(layer.attention.self, x)
            x = self.text.self_block(layer, x, k, v, mask)
            ck, cv = self.text.kv(layer.crossattention.self, image_states)
            x = self.text.cross_block(layer, x, ck, cv, None)
            x = self.text.ffn(layer, x)
        return x


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def _export(module, args, path, input_names, output_names, dynamic_axes):
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _io(path: Path):
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    def elem(v):
        return onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()

    return (
        [{"name": v.name, "type": elem(v), "shape": dims(v)} for v in m.graph.input],
        [{"name": v.name, "type": elem(v), "shape": dims(v)} for v in m.graph.output],
    )


def _optimize(path: Path, model_type: str, heads: int, hidden: int) -> dict:
    """ORT's transformer optimiser in place; returns its fusion counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimize_model(
            str(path), model_type=model_type, num_heads=heads, hidden_size=hidden, opt_level=0
        )
    stats = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    opt.save_model_to_file(str(path))
    return stats


def _int8(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # A tied weight (BLIP's word embeddings, also its LM head) feeds a Gather and a MatMul:
    # the quantiser rewrites it for the MatMul in place and breaks the Gather. Give the
    # Gather its own float copy first.
    m = onnx.load(str(src))
    users: dict[str, list] = {}
    for n in m.graph.node:
        for x in n.input:
            users.setdefault(x, []).append(n)
    inits = {i.name: i for i in m.graph.initializer}
    for name, nodes in users.items():
        if name in inits and len(nodes) > 1 and any(n.op_type == "Gather" for n in nodes):
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[name])
            copy.name = name + ".gather"
            m.graph.initializer.append(copy)
            for n in nodes:
                if n.op_type == "Gather":
                    n.input[0] = copy.name
    untied = dst.with_suffix(".untied.onnx")
    onnx.save(m, str(untied))
    quantize_dynamic(
        str(untied),
        str(dst),
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        # Only products with a weight: attention's activation x activation products stay f32.
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    # The quantiser's shape inference records the export sample's sizes as intermediate
    # shapes (value_info), which contradict other batch/past sizes at load: drop them.
    untied.unlink()
    m = onnx.load(str(dst))
    del m.graph.value_info[:]
    onnx.save(m, str(dst))


def _fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = onnx.load(str(src))
    m16 = convert_float_to_float16(m, keep_io_types=True, disable_shape_infer=False)
    onnx.save(m16, str(dst))


def weights_hash(model_dir: Path, prefix: str) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the tensors under `prefix`, sorted
    by name, read from the safetensors header as stored: the same value the Rust runtime
    computes (`nn::weights_hash`) to find shared towers."""
    raw = (model_dir / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n :]
    h = hashlib.sha256()
    for name in sorted(k for k in header if k.startswith(prefix)):
        e = header[name]
        a, b = e["data_offsets"]
        h.update(name[len(prefix) :].encode())
        h.update(e["dtype"].encode())
        h.update(("[" + ", ".join(str(d) for d in e["shape"]) + "]").encode())
        h.update(data[a:b])
    return h.hexdigest()


def export(model_dir: Path, int8: bool = False, fp16: bool = False, optimize: bool = True,
           quiet: bool = False) -> dict:
    import onnx
    import onnxruntime
    import transformers
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    out = model_dir / "onnx"
    out.mkdir(exist_ok=True)
    graphs = []

    def add(name, module, args, inputs, outputs, axes, opt_type=None, heads=0, hidden=0):
        path = out / f"{name}.onnx"
        _export(module, args, path, inputs, outputs, axes)
        fusions = {}
        if optimize and opt_type:
            fusions = _optimize(path, opt_type, heads, hidden)
        onnx.checker.check_model(str(path))
        ins, outs = _io(path)
        entry = {"name": name, "file": path.name, "inputs": ins, "outputs": outs, "fusions": fusions}
        variants = {"f32": path.name}
        if int8:
            _int8(path, out / f"{name}.int8.onnx")
            variants["int8"] = f"{name}.int8.onnx"
        if fp16:
            _fp16(path, out / f"{name}.fp16.onnx")
            variants["fp16"] = f"{name}.fp16.onnx"
        entry["variants"] = variants
        graphs.append(entry)
        if not quiet:
            print(f"  {name}: {', '.join(variants.values())}; fusions {fusions or 'none'}")

    mt = cfg.model_type
    with torch.no_grad():
        if mt == "clip":
            from transformers import CLIPModel

            model = CLIPModel.from_pretrained(model_dir, attn_implementation="eager").eval()
            v, t = cfg.vision_config, cfg.text_config
            px = torch.randn(2, 3, v.image_size, v.image_size)
            add("vision", ClipVision(model), (px,), ["pixel_values"], ["image_embeds"],
                {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                "clip", v.num_attention_heads, v.hidden_size)
            ids = torch.tensor([[1, 2, 3, t.eos_token_id], [1, 2, t.eos_token_id, 0]])
            mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
            add("text", ClipText(model), (ids, mask), ["input_ids", "attention_mask"], ["text_embeds"],
                {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                 "text_embeds": {0: "batch"}},
                "clip", t.num_attention_heads, t.hidden_size)
            shared = {"vision": weights_hash(model_dir, "vision_model.")}
        elif mt == "blip":
            arch = (cfg.architectures or [""])[0]
            from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering

            vqa = arch == "BlipForQuestionAnswering"
            cls = BlipForQuestionAnswering if vqa else BlipForConditionalGeneration
            model = cls.from_pretrained(model_dir, attn_implementation="eager").eval()
            v, t = cfg.vision_config, cfg.text_config
            heads, n = t.num_attention_heads, t.num_hidden_layers
            dh = t.hidden_size // heads
            px = torch.randn(2, 3, v.image_size, v.image_size)
            add("vision", BlipVision(model), (px,), ["pixel_values"], ["image_states"],
                {"pixel_values": {0: "batch"}, "image_states": {0: "batch"}},
                "vit", v.num_attention_heads, v.hidden_size)
            s = (v.image_size // v.patch_size) ** 2 + 1
            states = torch.randn(2, s, v.hidden_size)
            if vqa:
                ids = torch.tensor([[t.bos_token_id, 5, 6, t.sep_token_id], [t.bos_token_id, 5, t.sep_token_id, 0]])
                am = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
                add("question_encoder", BlipQuestionEncoder(model, heads), (ids, am, states),
                    ["input_ids", "attention_mask", "image_states"], ["question_states"],
                    {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                     "image_states": {0: "batch", 1: "image_seq"}, "question_states": {0: "batch", 1: "seq"}},
                    "bert", heads, t.hidden_size)
                enc = torch.randn(2, 4, t.hidden_size)
            else:
                enc = states
            kv_names = [f"cross_{kind}_{i}" for i in range(n) for kind in ("key", "value")]
            add("decoder_cross", BlipDecoderCross(model.text_decoder, heads), (enc,),
                ["encoder_states"], kv_names,
                {"encoder_states": {0: "batch", 1: "enc_seq"},
                 **{k: {0: "batch", 2: "enc_seq"} for k in kv_names}})
            past_names = [f"past_{kind}_{i}" for i in range(n) for kind in ("key", "value")]
            present_names = [f"present_{kind}_{i}" for i in range(n) for kind in ("key", "value")]
            past = [torch.randn(2, heads, 3, dh) for _ in past_names]
            cross = list(BlipDecoderCross(model.text_decoder, heads)(enc))
            step_ids = torch.tensor([[7], [8]])
            emask = torch.ones(2, enc.shape[1])
            axes = {"input_ids": {0: "batch", 1: "step"}, "encoder_mask": {0: "batch", 1: "enc_seq"},
                    "logits": {0: "batch"}}
            axes.update({k: {0: "batch", 2: "past"} for k in past_names})
            axes.update({k: {0: "batch", 2: "enc_seq"} for k in kv_names})
            axes.update({k: {0: "batch", 2: "total"} for k in present_names})
            add("decoder_step", BlipDecoderStep(model.text_decoder, heads),
                (step_ids, emask, *past, *cross),
                ["input_ids", "encoder_mask", *past_names, *kv_names], ["logits", *present_names],
                axes, "bert", heads, t.hidden_size)
            shared = {"vision": weights_hash(model_dir, "vision_model.")}
        else:
            raise SystemExit(f"{model_dir}: model_type {mt!r} is not exported (clip, blip)")

    manifest = {
        "format": 1,
        "model_type": mt,
        "architecture": (cfg.architectures or [mt])[0],
        "opset": OPSET,
        "exporter": {
            "torch": torch.__version__.split("+")[0],
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "optimized": optimize,
        "weights_sha256": shared,
        "graphs": graphs,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path, action="append",
                    help="checkpoint folder (repeat for several)")
    ap.add_argument("--int8", action="store_true", help="also write dynamically quantised int8 graphs")
    ap.add_argument("--fp16", action="store_true", help="also write fp16 graphs (GPU)")
    ap.add_argument("--no-optimize", action="store_true", help="skip ORT's transformer optimiser")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    for d in a.model:
        print(f"{d}:")
        export(d, int8=a.int8, fp16=a.fp16, optimize=not a.no_optimize)
    return 0


if __name__ == "__main__":
    sys.exit(main())
