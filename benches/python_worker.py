"""A Python worker doing the same job as `fusionstream run` on the same bundle: read JSONL
events, load images with PIL, preprocess with the Hugging Face image processors, run CLIP
(image and text embeddings, match score, zero-shot tags), the gated fusion head, BLIP
captioning and BLIP VQA (greedy) with transformers in micro-batches, write one JSONL file per
output stream. The baseline of benches/compare_pipeline.sh.

Usage (repository root): python benches/python_worker.py EVENTS.jsonl OUT_DIR [BATCH]
Prints one JSON line: events, seconds, events_per_second, latency_p50_ms, latency_p99_ms."""

import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    BlipForConditionalGeneration,
    BlipForQuestionAnswering,
    BlipImageProcessor,
    CLIPImageProcessor,
    CLIPModel,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.fusion import GatedFusionHead  # noqa: E402
from models.train import DEC, build_tokenizer, encode  # noqa: E402

ALL = ["embed", "match", "caption", "answer", "tag"]


class Models:
    """The bundle's models, loaded once; `run_batch` does one micro-batch of events."""

    def __init__(self, bundle: Path = Path("models/shapes")) -> None:
        self.tok = build_tokenizer()
        self.clip = CLIPModel.from_pretrained(str(bundle / "clip")).eval()
        self.clip_proc = CLIPImageProcessor.from_pretrained(str(bundle / "clip"))
        self.cap = BlipForConditionalGeneration.from_pretrained(str(bundle / "blip-caption")).eval()
        self.cap_proc = BlipImageProcessor.from_pretrained(str(bundle / "blip-caption"))
        self.vqa = BlipForQuestionAnswering.from_pretrained(str(bundle / "blip-vqa")).eval()
        self.vqa_proc = BlipImageProcessor.from_pretrained(str(bundle / "blip-vqa"))
        self.head = GatedFusionHead.load(bundle / "fusion").eval()
        self.labels = ["circle", "square", "triangle", "star", "cross", "hexagon", "red", "green",
                       "blue", "yellow", "purple", "orange", "white", "black"]
        with torch.inference_mode():
            self.label_emb = self.text_emb([f"a {l}" for l in self.labels])
        self.scale = self.clip.logit_scale.exp()

    def text_emb(self, texts):
        ids, mask = encode(self.tok, texts)
        e = self.clip.get_text_features(input_ids=ids, attention_mask=mask)
        return torch.nn.functional.normalize(getattr(e, "pooler_output", e), dim=-1)

    @torch.inference_mode()
    def run_batch(self, evs):
        """Events (dicts with "img": a PIL image or None) -> {stream: [record, ...]}."""
        out = {s: [] for s in ["captions", "answers", "embeddings", "tags"]}
        clip, tok = self.clip, self.tok
        with_img = [e for e in evs if e["img"] is not None]
        with_txt = [e for e in evs if e.get("text")]
        d = clip.config.projection_dim
        img_e = {}
        if with_img:
            px = self.clip_proc([e["img"] for e in with_img], return_tensors="pt")["pixel_values"]
            f = clip.get_image_features(pixel_values=px)
            f = torch.nn.functional.normalize(getattr(f, "pooler_output", f), dim=-1)
            img_e = {id(e): f[i] for i, e in enumerate(with_img)}
        txt_e = {}
        if with_txt:
            f = self.text_emb([e["text"] for e in with_txt])
            txt_e = {id(e): f[i] for i, e in enumerate(with_txt)}
        emb_evs = [e for e in evs if id(e) in img_e or id(e) in txt_e]
        if emb_evs:
            zero = torch.zeros(d)
            im = torch.stack([img_e.get(id(e), zero) for e in emb_evs])
            tx = torch.stack([txt_e.get(id(e), zero) for e in emb_evs])
            imm = torch.tensor([1.0 if id(e) in img_e else 0.0 for e in emb_evs])
            txm = torch.tensor([1.0 if id(e) in txt_e else 0.0 for e in emb_evs])
            fused = self.head(im, tx, imm, txm)
            for i, e in enumerate(emb_evs):
                rec = {"event_id": e["id"], "fused_embedding": fused[i].tolist()}
                if id(e) in img_e:
                    rec["image_embedding"] = img_e[id(e)].tolist()
                if id(e) in txt_e:
                    rec["text_embedding"] = txt_e[id(e)].tolist()
                if id(e) in img_e and id(e) in txt_e:
                    rec["match_score"] = float(img_e[id(e)] @ txt_e[id(e)])
                out["embeddings"].append(rec)
                src = img_e.get(id(e), txt_e.get(id(e)))
                p = torch.softmax(self.scale * src @ self.label_emb.T, dim=-1)
                tags = [{"label": self.labels[j], "score": float(p[j])}
                        for j in torch.argsort(p, descending=True).tolist() if p[j] >= 0.1]
                out["tags"].append({"event_id": e["id"], "tags": tags})
        cap_evs = [e for e in with_img if "caption" in e["tasks"]]
        if cap_evs:
            px = self.cap_proc([e["img"] for e in cap_evs], return_tensors="pt")["pixel_values"]
            ids = self.cap.generate(pixel_values=px, max_new_tokens=32, do_sample=False)
            for e, row in zip(cap_evs, ids):
                out["captions"].append({"event_id": e["id"], "caption": tok.decode(row.tolist(), skip_special_tokens=True)})
        qa_evs = [e for e in with_img if "answer" in e["tasks"] and e.get("question")]
        if qa_evs:
            px = self.vqa_proc([e["img"] for e in qa_evs], return_tensors="pt")["pixel_values"]
            q, mask = encode(tok, [e["question"] for e in qa_evs])
            ids = self.vqa.generate(input_ids=q, attention_mask=mask, pixel_values=px, max_new_tokens=32, do_sample=False)
            for e, row in zip(qa_evs, ids):
                ans = tok.decode([x for x in row.tolist() if x != DEC], skip_special_tokens=True).strip()
                out["answers"].append({"event_id": e["id"], "question": e["question"], "answer": ans})
        return out


def percentiles(latencies):
    latencies = sorted(latencies)
    pct = lambda p: latencies[round((len(latencies) - 1) * p)] * 1e3 if latencies else 0.0
    return round(pct(0.5), 1), round(pct(0.99), 1)


def main() -> None:
    events_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    media = Path("examples")
    out_dir.mkdir(parents=True, exist_ok=True)
    models = Models()
    files = {s: open(out_dir / f"{s}.jsonl", "w") for s in ["captions", "answers", "embeddings", "tags", "dead_letters"]}
    lines = events_path.read_text().splitlines()
    latencies = []
    t_start = time.perf_counter()
    for k in range(0, len(lines), batch):
        t_read = time.perf_counter()
        evs = []
        for line in lines[k : k + batch]:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                files["dead_letters"].write(json.dumps({"reason": "malformed_json", "payload": line}) + "\n")
                continue
            e.setdefault("tasks", ALL)
            e["img"] = None
            if "image" in e:
                try:
                    e["img"] = Image.open(media / e["image"]).convert("RGB")
                except Exception:
                    e["degraded"] = "image_unusable"
            evs.append(e)
        for stream, recs in models.run_batch(evs).items():
            for r in recs:
                files[stream].write(json.dumps(r) + "\n")
        for f in files.values():
            f.flush()
        done = time.perf_counter()
        latencies += [done - t_read] * len(evs)
    seconds = time.perf_counter() - t_start
    p50, p99 = percentiles(latencies)
    print(json.dumps({"events": len(lines), "seconds": round(seconds, 3),
                      "events_per_second": round(len(lines) / seconds, 1),
                      "latency_p50_ms": p50, "latency_p99_ms": p99,
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
