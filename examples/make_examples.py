"""Write the embedded default's example events and media (examples/events, examples/media).

Run from the repository root: python examples/make_examples.py (needs Pillow). The events
cover every row of the degradation matrix and every class of bad event; the media are
scenes of the bundled "shapes" world plus deliberately broken files.
"""

import base64
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent
REF = ROOT.parent / "models" / "fixtures" / "shapes"
MEDIA = ROOT / "media"
EVENTS = ROOT / "events"


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def main() -> None:
    ref = json.loads((REF / "reference.json").read_text())
    MEDIA.mkdir(exist_ok=True)
    EVENTS.mkdir(exist_ok=True)
    for i in range(6):
        shutil.copy(REF / "images" / f"scene{i}.png", MEDIA / f"scene{i}.png")
    Image.open(REF / "images" / "scene6.png").convert("RGB").save(MEDIA / "scene6.jpg", quality=92)
    jpeg = (MEDIA / "scene6.jpg").read_bytes()
    (MEDIA / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (MEDIA / "bomb.png").write_bytes(png_header_only(50_000, 50_000))
    (MEDIA / "notes.txt").write_text("not an image\n")
    buf = io.BytesIO()
    Image.open(REF / "images" / "scene7.png").convert("RGB").resize((96, 96)).save(buf, format="PNG")
    inline = base64.b64encode(buf.getvalue()).decode()

    t, q = ref["texts"], ref["questions"]

    def write(name, events):
        with open(EVENTS / name, "w") as f:
            for e in events:
                f.write((e if isinstance(e, str) else json.dumps(e)) + "\n")

    write("01-image-and-text.jsonl", [
        {"schema_version": 1, "id": "full-0", "image": "media/scene0.png", "text": t[0], "question": q[0],
         "tenant": "demo", "attributes": {"uploader": "u-17"}, "timestamp": "2026-11-27T09:00:00Z"},
        {"id": "full-1", "image": "media/scene1.png", "text": t[1], "question": q[1]},
        {"id": "full-2", "image": "media/scene2.png", "text": t[2], "question": q[2]},
        {"id": "full-3", "image": "file://media/scene3.png", "text": t[3], "question": q[3],
         "tasks": ["embed", "match", "answer"]},
        {"id": "full-4", "image": "media/scene4.png", "text": t[4], "question": q[4], "tasks": ["caption", "tag"]},
        {"id": "full-5-mismatch", "image": "media/scene5.png", "text": t[0], "tasks": ["match"]},
        {"id": "full-6-jpeg", "image": "media/scene6.jpg", "text": t[6], "question": q[6]},
    ])
    write("02-image-only.jsonl", [
        {"id": "image-0", "image": "media/scene0.png"},
        {"id": "image-1-question", "image": "media/scene1.png", "question": q[1]},
        {"id": "image-2-inline", "image_base64": inline, "tasks": ["caption", "embed", "tag"]},
        {"id": "image-3-caption", "image": "media/scene3.png", "tasks": ["caption"]},
    ])
    write("03-text-only.jsonl", [
        {"id": "text-0", "text": t[4]},
        {"id": "text-1", "text": "a large green star in the centre", "tasks": ["embed", "tag"]},
        {"id": "text-2-with-question", "text": t[5], "question": q[5]},
    ])
    write("04-image-unusable.jsonl", [
        {"id": "degraded-missing", "image": "media/no-such-file.png", "text": t[0], "question": q[0]},
        {"id": "degraded-corrupt", "image": "media/truncated.jpg", "text": t[1]},
        {"id": "degraded-bomb", "image": "media/bomb.png", "text": t[2]},
        {"id": "degraded-not-an-image", "image": "media/notes.txt", "text": t[3]},
        {"id": "degraded-bad-base64", "image_base64": "this is not base64!", "text": t[4]},
        {"id": "degraded-outside-root", "image": "../README.md", "text": t[5]},
        {"id": "degraded-s3-unconfigured", "image": "s3://uploads/scene0.png", "text": t[0]},
        {"id": "degraded-unsupported-scheme", "image": "https://example.com/a.png", "text": t[1]},
        {"id": "degraded-long-question", "image": "media/scene2.png", "question": "why " * 400},
    ])
    write("05-bad-events.jsonl", [
        '{"id": "broken-json", "text": ',
        json.dumps({"schema_version": 2, "id": "future-version", "text": "hello"}),
        json.dumps({"text": "no id here"}),
        json.dumps({"id": 42, "text": "numeric id"}),
        json.dumps({"id": "wrong-type", "text": ["not", "a", "string"]}),
        json.dumps({"id": "typo-field", "txt": "misspelt field"}),
        json.dumps({"id": "too-long-text", "text": "word " * 5000}),
        json.dumps({"id": "nothing-usable"}),
        json.dumps({"id": "question-only", "question": "what colour is the cross ?"}),
        json.dumps({"id": "caption-without-image", "text": t[0], "tasks": ["caption"]}),
        json.dumps({"id": "image-only-corrupt", "image": "media/truncated.jpg"}),
        json.dumps({"id": "expired", "text": t[0], "deadline": "2020-01-01T00:00:00Z"}),
        "[1, 2, 3]",
    ])


if __name__ == "__main__":
    main()
