"""The CNN shape teacher and its distillation loss (`models.train.Teacher`, `Distill`)."""

from __future__ import annotations

import torch

from models.scenes import scenes
from models.train import NO_TEACHER, ConvTower, Teacher, pixels


def test_the_cnn_gives_one_state_per_patch_of_the_vits_grid():
    px = torch.zeros(2, 3, 64, 64)
    assert ConvTower(8)(px).shape == (2, 64, 128)
    assert ConvTower(16)(torch.zeros(2, 3, 128, 128)).shape == (2, 64, 128)


def test_teacher_features_are_standardised_per_channel_and_cover_every_scene():
    data = scenes(81, 96)
    teacher = Teacher.fit(data, pixels(data), minutes=0.05, weight=0.5, log=lambda _: None)
    f = teacher.features
    assert f.shape == (96, 64, 128)
    live = f.flatten(0, 1).std(0) > 0  # a ReLU channel dead on every patch stays at 0
    assert live.sum() > 32
    assert f.flatten(0, 1).mean(0).abs().max() < 1e-3
    # Unit spread, less what the epsilon of 1e-5 takes from channels of tiny raw spread.
    std = f.flatten(0, 1).std(0)[live]
    assert std.max() < 1 + 1e-4 and std.median() > 0.99


def test_distillation_is_weight_times_the_mse_of_the_mapped_patch_states_and_nothing_when_off():
    features = torch.randn(4, 64, 16)
    distill = Teacher(features, 0.5).student(8)
    states = torch.randn(2, 65, 8)  # class token first
    want = 0.5 * torch.nn.functional.mse_loss(distill.match(states[:, 1:]), features[[3, 1]])
    assert torch.allclose(distill(states, [3, 1]), want)
    assert len(distill.parameters()) == 2
    off = NO_TEACHER.student(8)
    assert off(states, [0, 1]) == 0.0 and off.parameters() == []
    assert Teacher.fit(scenes(82, 4), torch.zeros(4, 3, 64, 64), minutes=1.0, weight=0.0, log=print).features is None
