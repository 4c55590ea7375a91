"""Gated fusion head: the reference implementation (PyTorch) of design notes §2.

    g     = sigmoid(W [e_img; e_txt] + b)        (one gate per dimension, or one scalar)
    fused = normalise(g * e_img + (1 - g) * e_txt)

A modality mask per event says what is present. With only one modality the gate is forced
to select it (g = 1 for image only, g = 0 for text only), so the fused vector is the
normalised embedding of the modality that arrived and its scale never depends on how many
modalities there were. The Rust runtime (`workers/model/src/fusion.rs`) must reproduce this
module to 1e-5; `models/tools/make_tiny.py` writes the parity fixtures.

Saved layout (Hugging Face style, loadable without this file):
    config.json        {"model_type": "fusionstream_gated_fusion", "embed_dim": D, "gate": "vector"|"scalar"}
    model.safetensors  gate.weight (G x 2D), gate.bias (G), G = D or 1
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class GatedFusionHead(nn.Module):
    def __init__(self, embed_dim: int, gate: str = "vector") -> None:
        super().__init__()
        if gate not in ("vector", "scalar"):
            raise ValueError(f"gate must be 'vector' or 'scalar', got {gate!r}")
        self.embed_dim = embed_dim
        self.gate_kind = gate
        self.gate = nn.Linear(2 * embed_dim, embed_dim if gate == "vector" else 1)

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        image_mask: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        """image, text: (B, D) L2-normalised embeddings (rows of an absent modality are ignored);
        image_mask, text_mask: (B,) with 1.0 where the modality is present."""
        im = image_mask[:, None]
        tm = text_mask[:, None]
        image = image * im
        text = text * tm
        g = torch.sigmoid(self.gate(torch.cat([image, text], dim=-1)))
        both = im * tm
        # both present: learned gate; one present: select it; none: zeros (caller never asks)
        g = both * g + (1.0 - both) * im
        fused = g * image + (1.0 - g) * text
        return torch.nn.functional.normalize(fused, dim=-1, eps=1e-12)

    def save(self, out: Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        cfg = {
            "architectures": ["GatedFusionHead"],
            "model_type": "fusionstream_gated_fusion",
            "embed_dim": self.embed_dim,
            "gate": self.gate_kind,
        }
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        save_file(
            {k: v.detach().contiguous() for k, v in self.state_dict().items()},
            str(out / "model.safetensors"),
        )

    @classmethod
    def load(cls, path: Path) -> "GatedFusionHead":
        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        head = cls(cfg["embed_dim"], cfg.get("gate", "vector"))
        head.load_state_dict(load_file(str(path / "model.safetensors")))
        return head
