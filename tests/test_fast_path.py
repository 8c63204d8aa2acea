"""The trainer's speed options (the GPU fast path) against the plain path: same batches, the LRT variance
path kept in fp32 under bf16 autocast, channels-last refused on CPUs, exact subspace updates of
channels-last weights, and no Python-side host syncs per step.

    python -m pytest tests/test_fast_path.py -x -q

No test here compares two CPU code paths to a rounding tolerance: their rounding depends on the CPU
model (AVX2 vs AVX-512). The channels-last training step is compared to the plain one on a GPU only.
"""

import copy
import dataclasses

import pytest
import torch

from ssvi import batches as batching
from ssvi.bench import SPEED_VARIANTS, synthetic_cifar
from ssvi.config import ConfigError, RunConfig
from ssvi.layers import BayesConv2d, bayesian_layers
from ssvi.subspace import random_mask, update_layer, zero_inactive
from ssvi.trainer import build_run, mixed_precision, train_one_epoch

TINY = dict(dataset="digits", arch="resnet18", width=0.125, image_size=8, batch_size=32, epochs=2, seed=3,
            device="cpu", delta_t=2)


def _tiny_data(n: int = 96):
    return synthetic_cifar(n, 8, seed=0)


def _one_epoch(overrides: dict, data=None, method: str = "ssvi"):
    cfg = RunConfig.from_dict({**TINY, "method": method, **overrides})
    run = build_run(cfg, data=data or _tiny_data())
    run.method.initialize(run.model)
    torch.manual_seed(0)
    row = train_one_epoch(run)
    return run, row


def test_precision_is_validated():
    with pytest.raises(ConfigError, match="precision='fp16'.*allowed: fp32, bf16"):
        RunConfig.from_dict({"precision": "fp16"})


def test_bench_variants_are_valid_configs():
    for overrides in SPEED_VARIANTS.values():
        RunConfig.from_dict({**TINY, **overrides})


def test_bf16_keeps_the_variance_path_in_fp32():
    torch.manual_seed(0)
    layer = BayesConv2d(8, 8, 3, padding=1, bias=False)
    with torch.no_grad():
        layer.weight_rho.fill_(-3.0)  # sigma = 0.049: a variance path that matters
    x = torch.randn(4, 8, 6, 6)

    def forward(autocast: bool):
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return layer(x)

    with torch.no_grad():
        layer.weight_mu.zero_()  # mean path = 0: the output is the variance path's std times noise
        std_fp32, std_bf16 = forward(False), forward(True)
        assert std_bf16.dtype == torch.float32
        torch.testing.assert_close(std_bf16, std_fp32, rtol=1e-6, atol=1e-7)
        layer.weight_mu.normal_()  # now the mean path contributes, and it runs in bf16
        full, mixed = forward(False), forward(True)
    mean_error = float((mixed - full).abs().max() / full.abs().max())
    assert 1e-4 < mean_error < 3e-2  # bf16 rounding of the mean path only


def test_bf16_variance_path_gets_fp32_inputs_from_bf16_activations():
    layer = BayesConv2d(4, 4, 1, bias=False)
    x = torch.randn(2, 4, 3, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_bf16_training_epoch_is_close_to_fp32():
    _, plain = _one_epoch({})
    run, mixed = _one_epoch({"precision": "bf16"})
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # autocast: fp32 master weights
    assert abs(mixed["loss"] / plain["loss"] - 1) < 0.05
    assert mixed["loss"] != plain["loss"]  # the mean path really ran in bf16
    assert abs(mixed["kl"] / plain["kl"] - 1) < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: channels-last is refused on CPUs")
def test_channels_last_matches_the_contiguous_step_on_gpu(monkeypatch):
    # randn_like fills memory in storage order, so channels-last draws the same LRT noise values at
    # other positions: an equally valid sample. Drawing noise in logical order for both runs leaves
    # only rounding between them.
    randn_like = torch.randn_like
    monkeypatch.setattr(torch, "randn_like", lambda t: randn_like(t.contiguous()).to(memory_format=_format_of(t)))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # TF32 rounding would swamp the comparison
    # one step from identical weights: later steps would add the rounding of a different conv algorithm
    no_updates, one_batch, cuda = {"delta_t": 1000, "min_subspace_updates": 0}, _tiny_data(32), {"device": "cuda"}
    plain_run, plain = _one_epoch({**no_updates, **cuda}, data=one_batch)
    fast_run, fast = _one_epoch({**no_updates, **cuda, "channels_last": True}, data=one_batch)
    assert plain_run.step == fast_run.step == 1
    for name, layer in bayesian_layers(fast_run.model).items():
        if layer.weight_mu.dim() == 4:
            assert layer.weight_mu.is_contiguous(memory_format=torch.channels_last), name
            assert layer.mask.is_contiguous(memory_format=torch.channels_last), name
    assert fast["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    for (name, p), q in zip(plain_run.model.named_parameters(), fast_run.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)


def test_subspace_update_of_channels_last_weights_is_exact():
    # (with rounding-level gradient differences, top-k near-ties could flip: compare on identical values)
    torch.manual_seed(0)
    plain = BayesConv2d(8, 16, 3, padding=1)
    plain.mask.copy_(random_mask(plain.mask.shape, 0.3, torch.Generator().manual_seed(1)))
    zero_inactive({"conv": plain})
    plain.weight_mu.grad = torch.randn_like(plain.weight_mu)
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    fast.weight_mu.grad = plain.weight_mu.grad.contiguous(memory_format=torch.channels_last)
    assert fast.weight_mu.is_contiguous(memory_format=torch.channels_last) and not fast.weight_mu.is_contiguous()
    for layer in (plain, fast):
        update_layer(layer, 0.3, "SNR_mean_abs", 1.0)
    assert fast.weight_mu.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(plain.mask, random_mask(plain.mask.shape, 0.3, torch.Generator().manual_seed(1)))
    for attr in ("mask", "weight_mu", "weight_rho"):
        assert torch.equal(getattr(fast, attr), getattr(plain, attr)), attr


@pytest.mark.parametrize("arch, width", [("resnet18", 0.125), ("resnet18", 0.0625), ("vgg16", 0.125)])
def test_channels_last_is_refused_on_cpu_for_every_model(arch, width):
    cfg = RunConfig.from_dict({**TINY, "arch": arch, "width": width, "channels_last": True})
    with pytest.raises(ConfigError, match="channels_last=True is for GPUs: on a CPU it is slower"):
        build_run(cfg, data=_tiny_data())
    build_run(dataclasses.replace(cfg, channels_last=False), data=_tiny_data())


def _format_of(t: torch.Tensor) -> torch.memory_format:
    channels_last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def test_data_on_device_gives_the_same_epoch():
    # On a CPU-only machine the device is the CPU: the option must then change nothing at all.
    _, plain = _one_epoch({})
    _, on_device = _one_epoch({"data_on_device": True})
    assert on_device == plain


def test_iterate_batches_follows_the_epoch_plan():
    x = torch.rand(10, 1, 6, 6)
    y = torch.arange(10)
    plan = batching.draw_epoch_plan(10, shuffle=True, augment=True, generator=torch.Generator().manual_seed(4))
    batches = list(batching.iterate_batches(x, y, 4, mean=(0.0,), std=(1.0,), shuffle=True, augment=True,
                                               generator=torch.Generator().manual_seed(4)))
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert torch.equal(ys, plan.order)
    expected = batching.hflip(batching.crop(x[plan.order], batching.CROP_PADDING, plan.crop_offsets),
                                 plan.flips)
    assert torch.equal(xs, expected)


HOST_SYNC_METHODS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


def test_training_steps_make_no_python_host_syncs(monkeypatch):
    """Python-level conversions of tensors to host values stall a GPU step; only the epoch summary may."""
    # every speed option a CPU allows (channels-last is GPU-only)
    cfg = RunConfig.from_dict({**TINY, "method": "ssvi", "delta_t": 1000, "min_subspace_updates": 0, **SPEED_VARIANTS["fast"], "channels_last": False})
    data = _tiny_data(32 * 5)
    run = build_run(cfg, data=data)
    run.method.initialize(run.model)
    run.method.densities()  # cached once per mask change, not per step
    calls: list[str] = []
    for name in HOST_SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    row = train_one_epoch(run)
    monkeypatch.undo()
    assert run.step == 5 and row["loss"] > 0
    assert calls == ["tolist"], calls  # the epoch's loss summary, once


def test_mixed_precision_context_only_for_bf16():
    cpu = torch.device("cpu")
    with mixed_precision(RunConfig(precision="bf16"), cpu):
        assert torch.is_autocast_enabled("cpu")
    with mixed_precision(RunConfig(), cpu):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fast_path_on_gpu_keeps_training_data_there_and_matches_plain():
    data = _tiny_data()
    cuda = {"device": "cuda"}
    plain_run, plain = _one_epoch(cuda, data=data)
    fast_run, fast = _one_epoch({**cuda, "data_on_device": True}, data=dataclasses.replace(data))
    assert fast_run.data.x_train.is_cuda and not plain_run.data.x_train.is_cuda
    assert fast == plain
