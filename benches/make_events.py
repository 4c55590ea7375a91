"""Events for the end-to-end benchmark: N events over the example scenes, a fixed mix of
image + text + question (all tasks), image only (caption, embed, tag) and text only.
Usage: python benches/make_events.py N OUT.jsonl [S3_BUCKET]
Media paths resolve against examples/, or with S3_BUCKET are s3://S3_BUCKET/sceneK.png."""

import json
import sys


def main() -> None:
    n, out = int(sys.argv[1]), sys.argv[2]
    bucket = sys.argv[3] if len(sys.argv) > 3 else None
    texts = [
        "a small black circle at the bottom and a large red cross on the right",
        "a small red circle at the top",
        "a large yellow square in the centre",
        "a small yellow star on the left",
    ]
    questions = ["what colour is the cross ?", "how many shapes are there ?", "is there a yellow square ?"]
    with open(out, "w") as f:
        for i in range(n):
            scene = f"s3://{bucket}/scene{i % 6}.png" if bucket else f"media/scene{i % 6}.png"
            kind = i % 3
            if kind == 0:
                e = {"id": f"b-{i}", "image": scene, "text": texts[i % 4], "question": questions[i % 3]}
            elif kind == 1:
                e = {"id": f"b-{i}", "image": scene, "tasks": ["caption", "embed", "tag"]}
            else:
                e = {"id": f"b-{i}", "text": texts[i % 4]}
            f.write(json.dumps(e) + "\n")


if __name__ == "__main__":
    main()
