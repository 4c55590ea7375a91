"""The scene generator's object masks and the per-patch targets training reads from them."""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from models.scenes import COLOURS, IMAGE_SIZE, POSITIONS, SHAPES, render, scenes
from models.train import patch_targets


def test_drawing_the_mask_leaves_the_scene_as_it_was():
    for scene in scenes(77, 20):
        plain = render(scene.objects, random.Random(5))
        mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
        masked = render(scene.objects, random.Random(5), mask)
        assert plain.tobytes() == masked.tobytes()
        assert set(np.unique(np.asarray(mask))) <= set(range(len(scene.objects) + 1))


def test_masks_cover_each_object_where_it_was_drawn_in_its_colour():
    for scene in scenes(78, 40):
        pixels = np.asarray(scene.image).astype(int)
        for k, o in enumerate(scene.objects):
            where = scene.mask == k + 1
            assert where.sum() > 100, (o, where.sum())
            ys, xs = np.nonzero(where)
            px, py = POSITIONS[o.position]
            # Centre within the generator's jitter (0.05) plus the drawn shape's own offset.
            assert abs(xs.mean() / IMAGE_SIZE - px) < 0.09 and abs(ys.mean() / IMAGE_SIZE - py) < 0.09
            # Drawn in the object's colour (the generator varies it by at most 15 per channel).
            drawn = pixels[where].mean(axis=0)
            assert np.abs(drawn - np.array(COLOURS[o.colour])).max() <= 16, (o, drawn)


def test_patch_targets_name_each_object_in_its_patches_and_nothing_elsewhere():
    batch = scenes(79, 40)
    targets = patch_targets(batch, grid=8)
    assert targets.shape == (40, 64, 3)
    for scene, t in zip(batch, targets):
        labelled = t[:, 0] != 0
        assert ((t[:, 1] != 0) == labelled).all() and ((t[:, 2] != 0) == labelled).all()
        for o in scene.objects:
            rows = t[:, 1] == 1 + list(COLOURS).index(o.colour)
            assert rows.any(), o
            assert (t[rows, 0] == 1 + SHAPES.index(o.shape)).all()
            assert (t[rows, 2] == (1 if o.size == "small" else 2)).all()
            # The patches sit around the object's position on the 8 x 8 grid.
            cells = rows.nonzero().flatten()
            px, py = POSITIONS[o.position]
            assert abs((cells % 8).float().mean().item() + 0.5 - px * 8) < 1.5
            assert abs((cells // 8).float().mean().item() + 0.5 - py * 8) < 1.5
        assert labelled.sum() <= sum(1 for _ in scene.objects) * 16
