"""Write random-weight checkpoints at real sizes for the CPU/GPU model benchmarks:
CLIP ViT-B/32 (transformers' CLIPConfig defaults = openai/clip-vit-base-patch32) and
BLIP-base captioning (BlipConfig defaults with 12 text heads = Salesforce/blip-image-captioning-base).

    python benches/make_models.py OUT_DIR
"""

import sys
from pathlib import Path

import torch
from transformers import BlipConfig, BlipForConditionalGeneration, CLIPConfig, CLIPModel


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-models")
    torch.manual_seed(0)
    clip = out / "clip-vit-b32"
    if not (clip / "model.safetensors").exists():
        CLIPModel(CLIPConfig()).eval().save_pretrained(str(clip))
    blip = out / "blip-base-caption"
    if not (blip / "model.safetensors").exists():
        cfg = BlipConfig(text_config={"num_attention_heads": 12})
        BlipForConditionalGeneration(cfg).eval().save_pretrained(str(blip))
    print(out)


if __name__ == "__main__":
    main()
