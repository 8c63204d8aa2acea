"""FLOPs convention: a hand-computable toy network, the paper's ResNet-18, and the per-step formulas."""

import pytest
import torch.nn as nn

from ssvi import flops
from ssvi.bayesianize import bayesianize
from ssvi.models import create_model


def _toy():
    # conv 1->2, 3x3, padding 1 on 4x4: 2 * (4*4*2) outputs * (1*3*3) MACs = 576 FLOPs
    # linear 32->3: 2 * 32 * 3 = 192 FLOPs
    return bayesianize(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(32, 3)))


def test_toy_network_per_layer_flops():
    profile = flops.profile_model(_toy(), (1, 4, 4))
    assert profile.layer_flops == {"0": 576.0, "2": 192.0}
    assert profile.other_flops == 0
    assert profile.forward({"2": 0.5}) == 576 + 96
    assert profile.training_forward() == 2 * 768


def test_resnet18_dense_forward_matches_reference():
    model = create_model("resnet18", num_classes=10)
    profile = flops.profile_model(model, (3, 32, 32))
    assert profile.dense_forward == pytest.approx(2 * 555.4e6, rel=1e-3)


def test_step_formulas():
    profile = flops.profile_model(_toy(), (1, 4, 4))
    sparse = {"2": 0.1}
    f_dense, f_sparse = 2 * 768, 2 * (576 + 19.2)
    assert flops.dense_step(profile) == pytest.approx(3 * f_dense)
    assert flops.sparse_step(profile, sparse) == pytest.approx(3 * f_sparse)
    assert flops.ssvi_update_phase_step(profile, sparse, 100) == pytest.approx(
        (3 * f_sparse * 100 + 2 * f_sparse + f_dense) / 101)
