"""Write random-weight checkpoints at real sizes for the CPU/GPU model benchmarks:
CLIP ViT-B/32 (transformers' CLIPConfig defaults = openai/clip-vit-base-patch32), CLIP ViT-B/16
(the same with 16-pixel patches = openai/clip-vit-base-patch16) and BLIP-base captioning
(BlipConfig defaults with 12 text heads = Salesforce/blip-image-captioning-base).
Each model is seeded (torch.manual_seed(0) before it is built).

    python benches/make_models.py OUT_DIR
"""

import sys
from pathlib import Path

import torch
from transformers import BlipConfig, BlipForConditionalGeneration, CLIPConfig, CLIPModel


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-models")
    clip = out / "clip-vit-b32"
    if not (clip / "model.safetensors").exists():
        torch.manual_seed(0)
        CLIPModel(CLIPConfig()).eval().save_pretrained(str(clip))
    clip16 = out / "clip-vit-b16"
    if not (clip16 / "model.safetensors").exists():
        torch.manual_seed(0)
        cfg = CLIPConfig()
        cfg.vision_config.patch_size = 16
        CLIPModel(cfg).eval().save_pretrained(str(clip16))
    blip = out / "blip-base-caption"
    if not (blip / "model.safetensors").exists():
        torch.manual_seed(0)
        cfg = BlipConfig(text_config={"num_attention_heads": 12})
        BlipForConditionalGeneration(cfg).eval().save_pretrained(str(blip))
    print(out)


if __name__ == "__main__":
    main()
