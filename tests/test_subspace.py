"""The sparse subspace: exact density, growth initialisation, masked state, the removal schedule."""

import math

import pytest
import torch

from ssvi import criteria
from ssvi.layers import bayesian_layers, total_kl
from ssvi.models import create_model
from ssvi.subspace import (SparsityLayout, mask_gradients, mask_momentum, random_mask, removal_fraction,
                           select_sparse_layers, set_masks, subspace_update, update_layer, zero_inactive)
from ssvi.layers import BayesLinear


def _tiny_model():
    return create_model("resnet18", num_classes=10, width=0.125, in_channels=1)


def _backward(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    model.zero_grad(set_to_none=True)
    (torch.nn.functional.cross_entropy(model(x), y) + 1e-6 * total_kl(model, 0.005)).backward()


def test_layout_first_conv_dense_shortcuts_and_classifier_sparse():
    model = _tiny_model()
    names = list(bayesian_layers(model))
    sparse = select_sparse_layers(model)
    assert names[0] == "conv1" and "conv1" not in sparse
    assert "linear" in sparse and any("shortcut" in n for n in sparse)
    narrow = select_sparse_layers(model, SparsityLayout(sparse_shortcuts=False, sparse_classifier=False))
    assert "linear" not in narrow and not any("shortcut" in n for n in narrow)


def test_density_is_exact_and_constant_over_many_updates():
    model = _tiny_model()
    layers = select_sparse_layers(model)
    g = torch.Generator().manual_seed(0)
    set_masks(layers, {n: random_mask(l.mask.shape, 0.1, g) for n, l in layers.items()})
    counts = {n: l.num_active() for n, l in layers.items()}
    assert all(c == l.mask.numel() - int(0.9 * l.mask.numel()) for c, l in zip(counts.values(), layers.values()))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    moved = 0
    for step in range(1, 41):
        _backward(model, step)
        if step % 4 == 0:
            moved += subspace_update(layers, optimizer, step, 40, 0.3, "SNR_mean_abs", 1.0)["moved"]
        else:
            mask_gradients(layers)
            optimizer.step()
            zero_inactive(layers)
            mask_momentum(optimizer, layers)
        assert {n: l.num_active() for n, l in layers.items()} == counts
        for layer in layers.values():  # inactive entries exactly zero everywhere
            inactive = ~layer.mask
            assert (layer.weight_mu[inactive] == 0).all() and (layer.weight_rho[inactive] == 0).all()
            for p in (layer.weight_mu, layer.weight_rho):
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    assert (buf[inactive] == 0).all()
    assert moved > 0


def _layer_with_known_state():
    layer = BayesLinear(10, 1, bias=False)
    with torch.no_grad():
        layer.mask.copy_(torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool))
        layer.weight_mu.copy_(torch.tensor([[0.5, 0.4, 0.3, 0.02, 0.01, 0, 0, 0, 0, 0]]))
        layer.weight_rho.copy_(torch.tensor([[-3.0, -3.1, -3.2, -3.3, -3.4, 0, 0, 0, 0, 0]]))
    layer.weight_mu.grad = torch.tensor([[0.0, 0.0, 0.0, 0.0, 9.0, 5.0, 1.0, 0.0, 0.0, 7.0]])
    return layer


def test_update_removes_lowest_scores_and_grows_largest_gradients():
    layer = _layer_with_known_state()
    update_layer(layer, zeta=0.4, criterion="mean", lam=1.0)  # k = floor(0.4 * 5) = 2
    # removed: entries 3 and 4 (smallest |mu|); candidates for growth: 3..9; largest |grad|: 4 (9.0), 9 (7.0)
    assert layer.mask[0].tolist() == [True, True, True, False, True, False, False, False, False, True]
    # entry 4 was removed and re-added: keeps its values; entry 9 is new: mu = 0
    assert layer.weight_mu[0, 4].item() == pytest.approx(0.01)
    assert layer.weight_rho[0, 4].item() == pytest.approx(-3.4)
    assert layer.weight_mu[0, 9].item() == 0.0
    # entry 3 removed and forgotten
    assert layer.weight_mu[0, 3].item() == 0.0 and layer.weight_rho[0, 3].item() == 0.0


def test_grown_rho_is_the_mean_over_kept_and_re_added_weights():
    # the authors' grow_std_init: the mean of every non-zero rho after masking, before the new weights get
    # theirs, i.e. over kept {0, 1, 2} and re-added {4}; the removed {3} and the fresh {9} are not in it
    layer = _layer_with_known_state()
    update_layer(layer, zeta=0.4, criterion="mean", lam=1.0)
    kept_and_re_added = torch.tensor([-3.0, -3.1, -3.2, -3.4], dtype=layer.weight_rho.dtype).mean().item()
    kept_only = torch.tensor([-3.0, -3.1, -3.2], dtype=layer.weight_rho.dtype).mean().item()
    grown = layer.weight_rho[0, 9].item()
    assert grown == pytest.approx(kept_and_re_added, rel=1e-6, abs=0)
    assert abs(grown - kept_only) > 1e-2  # the two rules are told apart by this state


def test_grown_rho_ignores_removed_weights_when_none_is_re_added():
    layer = _layer_with_known_state()
    layer.weight_mu.grad = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 1.0, 0.0, 0.0, 7.0]])
    update_layer(layer, zeta=0.4, criterion="mean", lam=1.0)  # removes 3, 4; adds 9, 5 (both fresh)
    assert layer.mask[0].tolist() == [True, True, True, False, False, True, False, False, False, True]
    kept = torch.tensor([-3.0, -3.1, -3.2], dtype=layer.weight_rho.dtype).mean().item()
    assert layer.weight_rho[0, 9].item() == pytest.approx(kept, rel=1e-6, abs=0)
    assert layer.weight_rho[0, 5].item() == pytest.approx(kept, rel=1e-6, abs=0)


@pytest.mark.parametrize("arch", ["resnet18", "vgg16"])
@pytest.mark.parametrize("density", [0.05, 0.1, 0.2])
def test_initial_active_count_is_the_authors_count(arch, density):
    # the authors keep n - int((1 - d) * n) weights per sparse layer; round(d * n) is one more in some layers
    model = create_model(arch, num_classes=10, width=1.0, in_channels=3)
    layers = select_sparse_layers(model)
    g = torch.Generator().manual_seed(0)
    counts = {n: int(random_mask(l.mask.shape, density, g).sum()) for n, l in layers.items()}
    expected = {n: l.mask.numel() - int((1 - density) * l.mask.numel()) for n, l in layers.items()}
    assert counts == expected
    if (arch, density) == ("resnet18", 0.1):  # this shape set does tell the two counts apart
        assert any(expected[n] != round(density * l.mask.numel()) for n, l in layers.items())


def test_update_uses_the_chosen_criterion():
    layer = _layer_with_known_state()
    with torch.no_grad():  # make entry 0 very uncertain: low SNR although |mu| is largest
        layer.weight_rho[0, 0] = 5.0
    record = update_layer(layer, zeta=0.2, criterion="snr", lam=1.0)  # k = 1
    assert record["removed"]["snr"][0] and not record["removed"]["mean"][0]


def test_removal_fraction_is_cosine_decayed():
    assert removal_fraction(0, 100, 0.3) == pytest.approx(0.3)
    assert removal_fraction(50, 100, 0.3) == pytest.approx(0.15)
    assert removal_fraction(100, 100, 0.3) == pytest.approx(0.0, abs=1e-12)


def test_update_record_compares_all_criteria():
    model = _tiny_model()
    layers = select_sparse_layers(model)
    g = torch.Generator().manual_seed(1)
    set_masks(layers, {n: random_mask(l.mask.shape, 0.2, g) for n, l in layers.items()})
    _backward(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    record = subspace_update(layers, optimizer, 1, 100, 0.3, "SNR_mean_abs", 1.0)
    n = len(criteria.CRITERIA)
    iou, rho = torch.tensor(record["iou"]), torch.tensor(record["spearman"])
    assert iou.shape == (n, n) and torch.allclose(iou, iou.T) and torch.all(iou.diagonal() == 1)
    assert ((iou >= 0) & (iou <= 1)).all() and ((rho >= -1 - 1e-9) & (rho <= 1 + 1e-9)).all()
    # snr and SNR_mean_abs rank identically (SNR(|theta|) is monotone in |mu|/sigma)
    i, j = criteria.CRITERIA.index("snr"), criteria.CRITERIA.index("SNR_mean_abs")
    assert iou[i, j] == pytest.approx(1.0) and rho[i, j] == pytest.approx(1.0)
    assert record["zeta"] == pytest.approx(removal_fraction(1, 100, 0.3))
    assert math.isclose(record["moved"], sum(math.floor(record["zeta"] * l.num_active()) for l in layers.values()))
