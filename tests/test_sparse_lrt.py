"""The sparse LRT kernels (run option sparse_kernel) against the masked dense path.

Layer level: every distinct Bayesian layer of the CIFAR ResNet-18 and VGG-16 (shape, stride, padding,
input size) at densities 0.05, 0.1 and 0.2: both products and the input / mu / rho gradients agree to
1e-5 of the reference's largest magnitude (sums run in another order, so not bit for bit). Batch 20, not
128, keeps CI short and exercises the kernels' batch padding. Run level: a short SSVI run with subspace
updates, stepped on both paths from identical states (free-running float32 training amplifies rounding
~10^3 per step, so whole runs cannot be compared).
"""

from __future__ import annotations

import copy

import pytest
import torch

from ssvi.config import ConfigError, RunConfig
from ssvi.errors import UserError
from ssvi.layers import bayesian_layers, set_mode
from ssvi.models import create_model
from ssvi.sparse_lrt import build_index, check_sparse_kernel_device, lrt_products, route_choices, set_lrt_route
from ssvi.subspace import random_mask, set_masks
from ssvi.trainer import build_run, kl_weight, train_step

BATCH = 20
DENSITIES = (0.05, 0.1, 0.2)
TOLERANCE = 1e-5


def _distinct_layers(arch: str) -> list[tuple]:
    """(layer, input shape) of each distinct layer configuration of the CIFAR-size model, in forward order."""
    model = create_model(arch, 10, 1.0, 3, bayesian=True)
    seen, found = set(), []

    def record(layer, inputs):
        x = inputs[0]
        key = (type(layer).__name__, tuple(layer.weight_mu.shape), getattr(layer, "stride", None),
               getattr(layer, "padding", None), tuple(x.shape[1:]))
        if key not in seen:
            seen.add(key)
            found.append((key, layer, tuple(x.shape[1:])))

    hooks = [layer.register_forward_pre_hook(record) for layer in bayesian_layers(model).values()]
    set_mode(model, "mean")  # one deterministic pass finds every layer's input shape
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    set_mode(model, "lrt")
    for hook in hooks:
        hook.remove()
    return found


LAYERS = [(arch, key, layer, shape) for arch in ("resnet18", "vgg16") for key, layer, shape in _distinct_layers(arch)]


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    ours, reference = ours.detach(), reference.detach()
    return float((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


def _products_and_grads(layer, x, upstream, sparse: bool):
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    sigma = layer.sigma
    mean, variance = lrt_products(layer, x, sigma) if sparse else layer.dense_products(x, sigma)
    ((mean * upstream[0]).sum() + (variance * upstream[1]).sum()).backward()
    return mean.detach(), variance.detach(), x.grad, layer.weight_mu.grad.clone(), layer.weight_rho.grad.clone()


def test_the_layer_list_covers_both_architectures():
    names = [key[0] for _, key, _, _ in LAYERS]
    strides = {key[2] for _, key, _, _ in LAYERS if key[2] is not None}
    assert "BayesLinear" in names and "BayesConv2d" in names and {1, 2} <= {s if isinstance(s, int) else s[0]
                                                                              for s in strides}
    assert len(LAYERS) >= 15  # ResNet-18: 12 distinct layers (1x1 shortcuts included); VGG-16 adds its own


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("case", range(len(LAYERS)), ids=[f"{a}-{'-'.join(map(str, k[1]))}-in{k[4][-1]}"
                                                          for a, k, _, _ in LAYERS])
def test_sparse_products_and_gradients_equal_the_masked_dense_path(case, density):
    _, _, template, in_shape = LAYERS[case]
    layer = copy.deepcopy(template)
    generator = torch.Generator().manual_seed(case)
    with torch.no_grad():
        layer.weight_mu.normal_(0, 0.05, generator=generator)
        set_masks({"layer": layer}, {"layer": random_mask(layer.mask.shape, density, generator)})
    x = torch.randn(BATCH, *in_shape, generator=generator)
    out_shape = layer.dense_products(x, layer.sigma)[0].shape
    upstream = (torch.randn(out_shape, generator=generator), torch.randn(out_shape, generator=generator))
    dense = _products_and_grads(layer, x, upstream, sparse=False)
    sparse = _products_and_grads(layer, x, upstream, sparse=True)
    active = layer.mask
    for name, ours, reference in [("mean", sparse[0], dense[0]), ("variance", sparse[1], dense[1]),
                                  ("input grad", sparse[2], dense[2]),
                                  ("mu grad (active)", sparse[3][active], dense[3][active]),
                                  ("rho grad", sparse[4], dense[4])]:
        assert _relative_error(ours, reference) <= TOLERANCE, name
    assert not sparse[3][~active].any()  # no gradient for inactive mu (the dense path has it)
    assert not sparse[4][~active].any() and not dense[4][~active].any()


def test_index_orders_and_transposes_the_active_weights():
    mask = torch.zeros(3, 2, 3, 3, dtype=torch.bool)
    mask[0, 1, 2, 0] = mask[2, 0, 1, 1] = mask[2, 1, 0, 2] = True
    index = build_index(mask)
    assert index.flat.tolist() == mask.flatten().nonzero().squeeze(1).tolist()
    assert index.oc_start.tolist() == [0, 1, 1, 3]
    assert list(zip(index.ic.tolist(), index.kh.tolist(), index.kw.tolist())) == [(1, 2, 0), (0, 1, 1), (1, 0, 2)]
    assert index.group_start.tolist() == [0, 1, 3]  # input channel 0: one entry, channel 1: two
    assert index.t_entry.tolist() == [1, 0, 2] and index.t_oc.tolist() == [2, 0, 2]
    # stride 2: groups (ic, kh % 2, kw % 2); (1, 2, 0) -> group 4, (0, 1, 1) -> group 3, (1, 0, 2) -> group 4
    strided = build_index(mask, stride=2)
    assert strided.group_start.tolist() == [0, 0, 0, 0, 1, 3, 3, 3, 3]
    assert strided.t_entry.tolist() == [1, 0, 2]


def test_the_index_follows_mask_changes():
    layer = copy.deepcopy(LAYERS[1][2])
    generator = torch.Generator().manual_seed(0)
    set_masks({"l": layer}, {"l": random_mask(layer.mask.shape, 0.1, generator)})
    x = torch.randn(4, *LAYERS[1][3])
    first = lrt_products(layer, x, layer.sigma)[0]
    set_masks({"l": layer}, {"l": random_mask(layer.mask.shape, 0.1, generator)})
    assert _relative_error(lrt_products(layer, x, layer.sigma)[0], layer.dense_products(x, layer.sigma)[0]) <= TOLERANCE
    assert not torch.allclose(first, lrt_products(layer, x, layer.sigma)[0])


def test_ssvi_steps_on_both_paths_from_identical_states():
    cfg = RunConfig.from_dict({"width": 0.25, "image_size": 8, "epochs": 2, "delta_t": 3, "threads": 1,
                               "density": 0.1, "batch_size": 64, "sparse_kernel": "all"})
    run = build_run(cfg)
    run.method.initialize(run.model)
    beta = kl_weight(cfg, 1, len(run.data.y_train))
    generator = torch.Generator().manual_seed(0)
    updates = 0
    for step in range(1, 13):  # subspace updates at steps 3, 6, 9, 12 (t_end = 0.75 x 46 steps)
        batch = torch.randint(0, len(run.data.y_train), (cfg.batch_size,), generator=generator)
        inputs = ((run.data.x_train[batch] - run.data.mean[0]) / run.data.std[0])
        labels = run.data.y_train[batch]
        start = copy.deepcopy((run.model.state_dict(), run.optimizer.state_dict(), run.method.state_dict(),
                               run.step, run.train_flops))
        outcomes = []
        for sparse_kernel in ("none", "all"):
            run.model.load_state_dict(start[0])
            run.optimizer.load_state_dict(copy.deepcopy(start[1]))  # it adopts (and then updates) the tensors
            run.method.load_state_dict(copy.deepcopy(start[2]))
            run.step, run.train_flops = start[3], start[4]
            run.cfg = cfg.__class__.from_dict({**cfg.to_dict(), "sparse_kernel": sparse_kernel})
            torch.manual_seed(1000 + step)  # the same LRT noise on both paths
            loss = train_step(run, inputs, labels, beta)[0]
            outcomes.append((float(loss), copy.deepcopy(run.model.state_dict()),
                             copy.deepcopy(run.optimizer.state_dict())))
        (dense_loss, dense_state, dense_optimizer), (sparse_loss, sparse_state, _) = outcomes
        assert sparse_loss == pytest.approx(dense_loss, rel=1e-5), step
        updates += run.method.updates_subspace(run.step)
        for name, value in dense_state.items():
            if value.is_floating_point():
                assert _relative_error(sparse_state[name], value) <= 1e-4, (step, name)
            else:
                assert torch.equal(sparse_state[name], value), (step, name)  # masks (scores far from ties)
        run.model.load_state_dict(dense_state)  # go on from the dense path's state on both paths
        run.optimizer.load_state_dict(dense_optimizer)
    assert updates == 4


def test_options_are_checked():
    with pytest.raises(ConfigError, match="sparse_kernel"):
        RunConfig.from_dict({"sparse_kernel": "fast"})
    with pytest.raises(ConfigError, match="fp32"):
        RunConfig.from_dict({"sparse_kernel": "all", "precision": "bf16"})
    with pytest.raises(UserError, match="CPU kernel"):
        check_sparse_kernel_device(torch.device("cuda"), "all")
    check_sparse_kernel_device(torch.device("cpu"), "auto")
    check_sparse_kernel_device(torch.device("cuda"), "none")


def test_auto_measures_once_per_shape_and_records_its_choice():
    layer = copy.deepcopy(LAYERS[1][2])
    set_masks({"l": layer}, {"l": random_mask(layer.mask.shape, 0.05, torch.Generator().manual_seed(0))})
    set_lrt_route({"l": layer}, "auto")
    x = torch.randn(8, *LAYERS[1][3])
    layer(x)
    layer(x)
    choices = route_choices({"l": layer})["l"]
    assert len(choices) == 1 and choices[0]["route"] in ("sparse", "dense")
    assert choices[0]["dense_ms"] > 0 and choices[0]["sparse_ms"] > 0 and choices[0]["density"] == 0.05
    assert (choices[0]["route"] == "sparse") == (choices[0]["sparse_ms"] < choices[0]["dense_ms"])


def test_results_do_not_depend_on_the_thread_count():
    # every sum runs in a fixed order, whatever the split of channels / rows over threads
    _, _, template, in_shape = LAYERS[2]  # a stride-2 3x3 conv
    layer = copy.deepcopy(template)
    set_masks({"l": layer}, {"l": random_mask(layer.mask.shape, 0.1, torch.Generator().manual_seed(3))})
    x = torch.randn(40, *in_shape, generator=torch.Generator().manual_seed(4))
    out_shape = layer.dense_products(x, layer.sigma)[0].shape
    upstream = (torch.randn(out_shape), torch.randn(out_shape))
    threads = torch.get_num_threads()
    try:
        runs = []
        for count in (1, 2):
            torch.set_num_threads(count)
            runs.append(_products_and_grads(layer, x, upstream, sparse=True))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
