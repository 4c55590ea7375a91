"""The "shapes" scene world: deterministic procedural scenes with captions and questions.

A scene is a 128x128 RGB image with 1-3 objects on a textured background. Each object has a
shape (6), a colour (8), a size (2) and a position (5: left, right, top, bottom, centre; the
objects of a scene have distinct positions, distinct colours and distinct shapes, so every
question has one answer). Everything is drawn from `random.Random(seed)`: the same seed gives
the same scenes on any machine.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 128
SHAPES = ["circle", "square", "triangle", "star", "cross", "hexagon"]
COLOURS = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 30),
    "purple": (140, 50, 180),
    "orange": (245, 135, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SIZES = {"small": 0.10, "large": 0.17}  # radius as a fraction of the image side
POSITIONS = {
    "left": (0.22, 0.5),
    "right": (0.78, 0.5),
    "top": (0.5, 0.22),
    "bottom": (0.5, 0.78),
    "centre": (0.5, 0.5),
}
# Reading order of positions in canonical captions.
POSITION_ORDER = ["left", "top", "centre", "bottom", "right"]
POSITION_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    position: str

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass
class Scene:
    image: Image.Image
    objects: list[Obj]
    captions: list[str] = field(default_factory=list)
    qa: list[tuple[str, str, str]] = field(default_factory=list)  # (type, question, answer)
    # Which object covers each pixel (0 background, k + 1 for objects[k]), as drawn: the
    # per-region truth that training can supervise the vision towers with.
    mask: np.ndarray | None = None

    @property
    def caption(self) -> str:
        """The canonical caption: every object, in reading order of positions."""
        return self.captions[0]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radii: list[float], offset: float) -> list[tuple[float, float]]:
        pts = []
        for i in range(n * len(radii)):
            a = offset + angle + 2 * math.pi * i / (n * len(radii))
            rr = radii[i % len(radii)]
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts

    if shape == "square":
        return ring(4, [r * 1.15], math.pi / 4)
    if shape == "triangle":
        return ring(3, [r * 1.25], -math.pi / 2)
    if shape == "hexagon":
        return ring(6, [r * 1.05], 0.0)
    if shape == "star":
        return ring(5, [r * 1.3, r * 0.55], -math.pi / 2)
    if shape == "cross":
        w = r * 0.42
        base = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]
    raise ValueError(shape)


def _background(rng: random.Random) -> Image.Image:
    n = IMAGE_SIZE
    nrng = np.random.default_rng(rng.getrandbits(32))
    base = rng.uniform(95, 165)
    tint = np.array([rng.uniform(-12, 12) for _ in range(3)])
    img = np.full((n, n, 3), base) + tint
    kind = rng.choice(["noise", "gradient", "stripes", "blobs"])
    yy, xx = np.mgrid[0:n, 0:n]
    if kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        img += (np.cos(a) * (xx - n / 2) + np.sin(a) * (yy - n / 2))[..., None] * rng.uniform(0.2, 0.45)
    elif kind == "stripes":
        a, period = rng.uniform(0, math.pi), rng.uniform(6, 20)
        img += (np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * math.pi / period) * rng.uniform(6, 14))[..., None]
    elif kind == "blobs":
        for _ in range(5):
            bx, by, br = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(10, 40)
            img += (np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * br**2)) * rng.uniform(-25, 25))[..., None]
    img += nrng.normal(0, rng.uniform(4, 16), img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def describe(objects: list[Obj]) -> list[str]:
    """Captions of a scene; the first is canonical (all attributes, reading order)."""
    ordered = sorted(objects, key=lambda o: POSITION_ORDER.index(o.position))
    parts = [f"{o.phrase()} {POSITION_PHRASE[o.position]}" for o in ordered]
    canonical = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    caps = [canonical]
    caps.append(" and ".join(o.phrase() for o in ordered))
    by_pos = {o.position: o for o in objects}
    if "left" in by_pos and "right" in by_pos:
        caps.append(f"{by_pos['left'].phrase()} to the left of {by_pos['right'].phrase()}")
    if "top" in by_pos and "bottom" in by_pos:
        caps.append(f"{by_pos['top'].phrase()} above {by_pos['bottom'].phrase()}")
    n = len(objects)
    caps.append(f"{COUNT_WORDS[n]} shape{'s' if n > 1 else ''} : " + " and ".join(f"{o.colour} {o.shape}" for o in ordered))
    return caps


def questions(objects: list[Obj], rng: random.Random) -> list[tuple[str, str, str]]:
    qa = []
    for o in objects:
        qa.append(("colour", f"what colour is the {o.shape} ?", o.colour))
        qa.append(("shape", f"what shape is the {o.colour} object ?", o.shape))
        qa.append(("position", f"where is the {o.colour} {o.shape} ?", o.position))
        qa.append(("size", f"what size is the {o.colour} {o.shape} ?", o.size))
        qa.append(("exists", f"is there a {o.colour} {o.shape} ?", "yes"))
    present = {(o.colour, o.shape) for o in objects}
    for _ in range(len(objects)):
        while True:
            c, s = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            if (c, s) not in present:
                break
        qa.append(("exists", f"is there a {c} {s} ?", "no"))
    qa.append(("count", "how many shapes are there ?", COUNT_WORDS[len(objects)]))
    return qa


def sample_objects(rng: random.Random) -> list[Obj]:
    n = rng.choice([1, 1, 2, 2, 3])
    positions = rng.sample(list(POSITIONS), n)
    colours = rng.sample(list(COLOURS), n)
    shapes = rng.sample(SHAPES, n)
    return [Obj(shapes[i], colours[i], rng.choice(list(SIZES)), positions[i]) for i in range(n)]


def render(objects: list[Obj], rng: random.Random, mask: Image.Image | None = None, scale: float = 1.0) -> Image.Image:
    """Draw the objects on a fresh background; another `rng` gives another view of the scene.
    With `mask` (an "L" image of the scene's size), also draw object k there with value k + 1
    (the same shapes, no extra draws from `rng`: the scene is the one drawn without it).
    `scale` multiplies every object's size (a training curriculum's larger objects)."""
    img = _background(rng)
    draw = ImageDraw.Draw(img)
    marks = ImageDraw.Draw(mask) if mask is not None else None
    for k, o in enumerate(objects):
        px, py = POSITIONS[o.position]
        cx = (px + rng.uniform(-0.05, 0.05)) * IMAGE_SIZE
        cy = (py + rng.uniform(-0.05, 0.05)) * IMAGE_SIZE
        r = SIZES[o.size] * IMAGE_SIZE * rng.uniform(0.9, 1.1) * scale
        fill = tuple(int(max(0, min(255, c + rng.uniform(-15, 15)))) for c in COLOURS[o.colour])
        if o.shape == "circle":
            box = [cx - r, cy - r, cx + r, cy + r]
            draw.ellipse(box, fill=fill)
            if marks is not None:
                marks.ellipse(box, fill=k + 1)
        else:
            points = _polygon(o.shape, cx, cy, r, rng.uniform(-0.4, 0.4))
            draw.polygon(points, fill=fill)
            if marks is not None:
                marks.polygon(points, fill=k + 1)
    return img


def make_scene(rng: random.Random, scale: float = 1.0) -> Scene:
    objects = sample_objects(rng)
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    img = render(objects, rng, mask, scale)
    return Scene(img, objects, describe(objects), questions(objects, rng), np.asarray(mask))


def scenes(seed: int, count: int, scale: float = 1.0) -> list[Scene]:
    rng = random.Random(seed)
    return [make_scene(rng, scale) for _ in range(count)]


def vocabulary() -> list[str]:
    words = set("a and on the at in to of above left right top bottom centre shape shapes : what colour is "
                "object where size how many are there yes no one two three".split())
    words |= {","}
    words |= set(SHAPES) | set(COLOURS) | set(SIZES) | {"?"}
    return sorted(words)
