"""Run the graphs of `models.export_onnx` with onnxruntime from Python, as the Rust runtime
does (flat K/V fed back from each step): used by the exporter's tests and by
`python -m models.eval --backend onnx`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(part: Path, name: str, precision: str = "f32", threads: int = 0) -> ort.InferenceSession:
    man = json.loads((part / "onnx" / "manifest.json").read_text())
    g = next(g for g in man["graphs"] if g["name"] == name)
    variant = {"f16": "fp16"}.get(precision, precision)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(
        str(part / "onnx" / g["variants"][variant]), opts, providers=["CPUExecutionProvider"]
    )


def pad(seqs, pad_id=0):
    t = max(map(len, seqs))
    ids = np.full((len(seqs), t), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), t), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class Decoder:
    """The BLIP decoder graphs (`decoder_cross`, `decoder_step`), greedy."""

    def __init__(self, part: Path, precision: str = "f32", threads: int = 0):
        cfg = json.loads((part / "config.json").read_text())
        self.cross = session(part, "decoder_cross", precision, threads)
        self.step = session(part, "decoder_step", precision, threads)
        t = cfg["text_config"]
        self.n = t["num_hidden_layers"]
        self.h = t["num_attention_heads"]
        self.dh = t["hidden_size"] // self.h
        self.bos, self.eos = t["bos_token_id"], t["sep_token_id"]

    def start(self, states, mask):
        kv = self.cross.run(None, {"encoder_states": states.astype(np.float32)})
        b = states.shape[0]
        past = [np.zeros((b, self.h, 0, self.dh), np.float32) for _ in range(2 * self.n)]
        return {"mask": mask.astype(np.float32), "cross": kv, "past": past}

    def run(self, ids, st):
        feeds = {"input_ids": ids.astype(np.int64), "encoder_mask": st["mask"]}
        for i in range(self.n):
            feeds[f"past_key_{i}"], feeds[f"past_value_{i}"] = st["past"][2 * i], st["past"][2 * i + 1]
            feeds[f"cross_key_{i}"], feeds[f"cross_value_{i}"] = st["cross"][2 * i], st["cross"][2 * i + 1]
        out = self.step.run(None, feeds)
        st["past"] = out[1:]
        return out[0]

    def greedy(self, states, mask, max_new):
        """Token ids per row (BOS first, EOS included when reached)."""
        b = states.shape[0]
        st = self.start(states, mask)
        seqs = [[self.bos] for _ in range(b)]
        ids = np.full((b, 1), self.bos)
        done = [False] * b
        for _ in range(max_new):
            nxt = self.run(ids, st).argmax(-1)
            for i in range(b):
                if not done[i]:
                    seqs[i].append(int(nxt[i]))
                    done[i] = int(nxt[i]) == self.eos
            if all(done):
                break
            ids = nxt[:, None]
        return seqs
