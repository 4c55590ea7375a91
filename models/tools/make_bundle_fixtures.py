"""Parity fixtures of the trained "shapes" bundle: for 8 test scenes (seed 7), the images as
PNG files and the transformers outputs of every part, for the Rust runtime's tests
(`workers/model/tests/bundle.rs`, `bundle_truth.rs`); with a tag head, its scores of the images and of the
captions as texts, each from the features its source reads (`tag_scores_image`,
`tag_scores_text`), and each scene's true labels (the scene generator's objects: `tag_truth`); for the truth tests, each scene's objects (`objects`) and
every question the generator asks of it with its true answer (`truth_questions`,
`truth_answers`, `truth_scene`).

    python -m models.tools.make_bundle_fixtures --bundle models/shapes --out models/fixtures/shapes
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
from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering, CLIPModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from models.fusion import GatedFusionHead
from models.scenes import scenes
from models.tags import kind_of, load_head, scores, tag_spec, truth
from models.train import build_tokenizer

N = 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("models/shapes"))
    ap.add_argument("--out", type=Path, default=Path("models/fixtures/shapes"))
    args = ap.parse_args()
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    tok = build_tokenizer()
    test = scenes(7, N)
    names = []
    for i, s in enumerate(test):
        name = f"scene{i}.png"
        s.image.save(out / "images" / name)
        names.append(name)
    proc = CLIPImageProcessorPil.from_pretrained(str(args.bundle / "clip"))
    images = [Image.open(out / "images" / n).convert("RGB") for n in names]
    px = torch.tensor(np.stack(proc(images, return_tensors="np")["pixel_values"]))
    captions = [s.caption for s in test]
    questions = [s.qa[i % len(s.qa)] for i, s in enumerate(test)]
    t: dict[str, torch.Tensor] = {"pixel_values": px}
    j: dict = {"images": names, "texts": captions, "questions": [q for _, q, _ in questions],
               "expected_answers": [a for _, _, a in questions],
               "objects": [[{"shape": o.shape, "colour": o.colour, "size": o.size, "position": o.position}
                            for o in s.objects] for s in test],
               "truth_questions": [q for s in test for _, q, _ in s.qa],
               "truth_answers": [a for s in test for _, _, a in s.qa],
               "truth_scene": [i for i, s in enumerate(test) for _ in s.qa]}
    with torch.no_grad():
        clip = CLIPModel.from_pretrained(str(args.bundle / "clip")).eval()
        img = clip.get_image_features(pixel_values=px)
        img = torch.nn.functional.normalize(getattr(img, "pooler_output", img), dim=-1)
        txt = []
        for c in captions:
            e = clip.get_text_features(input_ids=torch.tensor([tok.encode(c).ids]))
            txt.append(torch.nn.functional.normalize(getattr(e, "pooler_output", e), dim=-1)[0])
        txt = torch.stack(txt)
        t["image_embeds"], t["text_embeds"] = img, txt
        t["logits_per_image"] = clip.logit_scale.exp() * img @ txt.T
        j["text_ids"] = [tok.encode(c).ids for c in captions]
        head = GatedFusionHead.load(args.bundle / "fusion").eval()
        ones, zeros = torch.ones(N), torch.zeros(N)
        t["fused_both"] = head(img, txt, ones, ones)
        t["fused_image_only"] = head(img, txt, ones, zeros)
        t["fused_text_only"] = head(img, txt, zeros, ones)

        spec = tag_spec(args.bundle)
        if "head" in spec:
            tag_head = load_head(args.bundle, spec)
            cap = BlipForConditionalGeneration.from_pretrained(str(args.bundle / "blip-caption")).eval()
            inputs = {"image": {"embedding": img, "caption_patches": cap.vision_model(pixel_values=px).last_hidden_state[:, 1:]},
                      "text": {"embedding": txt, "tokens": j["text_ids"]}}
            for source, by_kind in inputs.items():
                kind = kind_of(spec, source)
                t[f"tag_scores_{source}"] = scores(by_kind[kind], tag_head, source, kind)
            j["tag_labels"] = spec["labels"]
            j["tag_truth"] = [[label for label, v in zip(spec["labels"], truth(s.objects, spec["labels"])) if v]
                              for s in test]

        cap = BlipForConditionalGeneration.from_pretrained(str(args.bundle / "blip-caption")).eval()
        for key, beams in [("caption_greedy", 1), ("caption_beam3", 3)]:
            rows = [cap.generate(pixel_values=px[i : i + 1], max_new_tokens=32, num_beams=beams, do_sample=False)[0]
                    for i in range(N)]
            j[f"{key}_ids"] = [r.tolist() for r in rows]
            j[key] = [tok.decode(r.tolist(), skip_special_tokens=True) for r in rows]
        vqa = BlipForQuestionAnswering.from_pretrained(str(args.bundle / "blip-vqa")).eval()
        j["question_ids"] = [tok.encode(q).ids for _, q, _ in questions]
        for key, beams in [("answer_greedy", 1), ("answer_beam3", 3)]:
            rows = [vqa.generate(input_ids=torch.tensor([ids]), pixel_values=px[i : i + 1], max_new_tokens=8,
                                 num_beams=beams, do_sample=False)[0] for i, ids in enumerate(j["question_ids"])]
            j[f"{key}_ids"] = [r.tolist() for r in rows]
            j[key] = [tok.decode(r.tolist(), skip_special_tokens=True) for r in rows]
    save_file({k: v.contiguous() for k, v in t.items()}, str(out / "reference.safetensors"))
    (out / "reference.safetensors").chmod(0o644)  # safetensors writes 0600
    j["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    (out / "reference.json").write_text(json.dumps(j, indent=1) + "\n")


if __name__ == "__main__":
    main()
