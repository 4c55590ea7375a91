"""Write the moderation example (examples/moderation/events.jsonl and its media under
examples/media/moderation/), used by `config/moderation.toml` and the moderation tests.

Run from the repository root: python examples/make_moderation_examples.py (needs Pillow and
Debian's fonts-dejavu-core). The images are signs with text in them (for the OCR signal),
benign scenes and a skin-toned field; the texts are benign, threatening, scam-like and
abusive sentences, so that every action of the example policy is exercised.
"""

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent
MEDIA = ROOT / "media" / "moderation"
EVENTS = ROOT / "moderation" / "events.jsonl"
FONTS = Path("/usr/share/fonts/truetype/dejavu")


def sign(path: Path, lines: list[str], bg: tuple, fg: tuple, font: str, size: int) -> None:
    f = ImageFont.truetype(str(FONTS / font), size)
    pad = size // 2
    widths = [f.getbbox(line)[2] for line in lines]
    w = max(widths) + 2 * pad
    h = len(lines) * int(size * 1.4) + 2 * pad
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        d.text((pad, pad + i * int(size * 1.4)), line, font=f, fill=fg)
    img.save(path)


def skin(path: Path) -> None:
    img = Image.new("RGB", (320, 240), (224, 172, 140))
    d = ImageDraw.Draw(img)
    d.ellipse((60, 40, 260, 220), fill=(205, 150, 120))
    img.filter(ImageFilter.GaussianBlur(12)).save(path, quality=90)


def main() -> None:
    MEDIA.mkdir(parents=True, exist_ok=True)
    sign(MEDIA / "sign-scam.png", ["FREE CRYPTO GIVEAWAY", "send 1 BTC, get 2 BTC back"],
         (250, 240, 90), (20, 20, 20), "DejaVuSans-Bold.ttf", 36)
    sign(MEDIA / "sign-birthday.png", ["Happy birthday Anna!", "Party at the park, 3 pm"],
         (40, 80, 160), (255, 255, 255), "DejaVuSans.ttf", 32)
    skin(MEDIA / "skin.jpg")
    events = [
        {"id": "mod-benign-scene", "image": "media/scene0.png",
         "text": "a small black circle at the bottom and a large red cross on the right"},
        {"id": "mod-threat", "text": "I know where you live and I will hurt you",
         "tasks": ["moderate"]},
        {"id": "mod-scam-text", "text": "Free crypto giveaway: send 1 BTC and receive 2 BTC back",
         "tasks": ["moderate", "embed"]},
        {"id": "mod-abuse", "text": "You are all idiots and I hate every one of you",
         "tasks": ["moderate"]},
        {"id": "mod-benign-text", "text": "Lovely weather for a walk along the river this afternoon.",
         "tasks": ["moderate"]},
        {"id": "mod-sign-scam", "image": "media/moderation/sign-scam.png",
         "tasks": ["moderate", "caption"]},
        {"id": "mod-sign-birthday", "image": "media/moderation/sign-birthday.png",
         "text": "see you at the party tonight", "tasks": ["moderate", "tag"]},
        {"id": "mod-skin-default", "image": "media/moderation/skin.jpg", "tasks": ["moderate"]},
        {"id": "mod-skin-kids", "image": "media/moderation/skin.jpg", "tasks": ["moderate"],
         "tenant": "kids"},
        {"id": "mod-image-missing", "image": "media/moderation/no-such-file.png",
         "text": "watch your back, I am going to kill you", "tasks": ["moderate"]},
        {"id": "mod-not-moderated", "text": "a large yellow square in the centre",
         "tasks": ["embed"]},
    ]
    EVENTS.parent.mkdir(parents=True, exist_ok=True)
    EVENTS.write_text("".join(json.dumps(e) + "\n" for e in events))
    print(f"wrote {len(events)} events to {EVENTS} and media to {MEDIA}")


if __name__ == "__main__":
    main()
