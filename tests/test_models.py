"""Model registry: parameter count of the paper's ResNet-18, and a timm-style smoke test of every model."""

import pytest
import torch

from ssvi.layers import bayesian_layers, total_kl
from ssvi.models import create_model, list_models


def test_resnet18_parameter_count_matches_reference():
    model = create_model("resnet18", num_classes=10, bayesian=False)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    convs = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert convs == 11_159_232


@pytest.mark.parametrize("name", list_models() + ["timm/resnet10t"])
@pytest.mark.parametrize("image_size", [16, 32])
def test_every_model_trains_one_step(name, image_size):
    model = create_model(name, num_classes=10, width=0.125, in_channels=3, bayesian=True)
    x, y = torch.randn(4, 3, image_size, image_size), torch.randint(0, 10, (4,))
    loss = torch.nn.functional.cross_entropy(model(x), y) + 1e-4 * total_kl(model, 0.005)
    loss.backward()
    assert torch.isfinite(loss)
    assert bayesian_layers(model), "every model must have Bayesian layers"
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: {pname} got no finite gradient"


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="resnet18"):
        create_model("resnet1000", num_classes=10)
