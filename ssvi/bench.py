"""Performance benchmark of the Bayesian layers: ``python -m ssvi bench`` (a measurement, not a test).

    python -m ssvi bench                                   # ResNet-18 width 1, batch 128, density 0.1, CPU
    python -m ssvi bench --width 0.25 --batch 32 --no-sparse-routes --out bench.json
    python -m ssvi bench --device cuda --speed-variants all --out gpu.json   # the GPU fast path check

Everything is measured in one process, so every number that matters is a ratio against a baseline
measured on the same machine in the same run:

  train_step   full SSVI training steps (LRT forward + cross-entropy + KL/N + backward + masked
               optimiser step) of ``production`` (the layers as they are) and ``reference``
               (:mod:`ssvi.reference`: separate mean/variance convolutions, mask multiplications, no
               fusion), interleaved step by step (alternating which goes first) so machine noise hits
               both alike; each path trains its own copy of the same model with its own optimiser.
  eval         evaluation throughput (mean-mode forward, no grad) of both, interleaved the same way.
  first_step_check
               both paths' loss and gradients on the first step under the same seed (max abs diff).
  sparse_routes
               layer-level microbenchmark per layer shape (CIFAR ResNet-18 shapes at the chosen width)
               and density: the production LRT forward+backward of one layer with a random mask (dense
               masked compute) against real sparse compute, where only active weights do work:
               im2col + ``torch.sparse.mm`` with a CSR (or BSR) weight for the forward, the input
               gradient through the sparse transpose, and the weight gradient at active entries only
               via ``torch.sparse.sampled_addmm``. Outputs and gradients are checked against the dense
               masked route (max abs diff) and the time ratio sparse/dense is reported either way.
  speed_variants
               (only with ``--speed-variants``) whole epochs of the real trainer on synthetic CIFAR-shaped
               data for the trainer's speed options -- plain, data_on_device, channels_last, bf16 and
               fast (all three) -- with samples/s, speedup over plain, the first-epoch loss against the
               plain path's (same seed), and on CUDA the host synchronisations of one epoch.

Times are seconds per step: median, p25/p75, min/max over the repeats after warm-up. Ratios are
production/reference or sparse/dense medians (< 1 = faster). Progress goes to stderr, the JSON to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import (BayesConv2d, BayesianLayer, BayesLinear, PosteriorInit, set_mode, total_kl,
                     variational_parameter_groups)
from .reference import LRT_EPS, reference_masked_step, reference_path, reference_total_kl

NUM_CLASSES = 10
NUM_TRAIN = 50_000            # CIFAR-10 training-set size: the N of KL/N
MICRO_DENSITIES = (0.05, 0.1, 0.2)
MICRO_ROUTES = ("csr", "bsr")  # also available: "bsr_block" (hypothetical block-structured mask)
ALL_ROUTES = ("csr", "bsr", "bsr_block")
BSR_BLOCK = 4                  # block edge tried first (then 2) for the BSR routes
MICRO_MIN_SAMPLE_S = 0.02      # small layers repeat inside one sample until it lasts this long
MICRO_SLOW_FACTOR = 2.0        # a route this many times slower than dense in its verification run gets 1 sample

JSON_KEYS = ("benchmark", "timestamp", "options", "machine", "model", "train_step", "eval", "first_step_check",
             "sparse_routes", "speed_variants", "notes", "wall_time_s")


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, inner: int = 1) -> float:
    """Seconds per call of ``fn`` (``inner`` calls back to back, synchronised at both ends)."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / inner


def summarize(samples: list[float], batch: int | None = None) -> dict:
    """median, p25/p75, min/max (seconds) and samples/s at the median."""
    s = sorted(samples)
    if len(s) >= 2:
        q = statistics.quantiles(s, n=4, method="inclusive")
        p25, p75 = q[0], q[2]
    else:
        p25 = p75 = s[0]
    out = {"median_s": statistics.median(s), "p25_s": p25, "p75_s": p75, "min_s": s[0], "max_s": s[-1],
           "n": len(s), "samples_s": samples}
    if batch:
        out["samples_per_s"] = batch / out["median_s"]
    return out


def ratio(a: dict, b: dict) -> float:
    return a["median_s"] / b["median_s"]


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median of the per-repeat ratios a_i / b_i: the two paths of a repeat ran back to back, so slow
    drifts of the machine cancel in each ratio (more robust than the ratio of medians on a noisy host)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
        "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(), "cpu_count": os.cpu_count(),
        "mkl": torch.backends.mkl.is_available(), "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "device": str(device),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else info.get(
        "cpu_model", platform.processor() or "cpu")
    return info


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# whole-model training steps and evaluation throughput
# --------------------------------------------------------------------------------------------

def build_model(arch: str, width: float, density: float, seed: int, device: torch.device):
    """Bayesian model with SSVI masks at ``density`` on the layers SSVI sparsifies (1.0 = dense VI), and
    the production method object (its masked optimiser step is the trainer's)."""
    from .config import RunConfig
    from .methods import SSVI, Method, TrainContext
    from .models import create_model

    torch.manual_seed(seed)
    model = create_model(arch, NUM_CLASSES, width, 3, bayesian=True).to(device)
    dense = density >= 1.0
    cfg = RunConfig(method="dense_vi" if dense else "ssvi", arch=arch, width=width, density=min(density, 1.0))
    method = Method(cfg) if dense else SSVI(cfg)
    # t_end = 0: no subspace update ever replaces a step (every step is a masked optimiser step)
    ctx = TrainContext(total_steps=0, t_end=0, profile=None, generator=torch.Generator().manual_seed(seed))
    method.attach(model, ctx)
    method.initialize(model)
    return model, method, cfg


def make_optimizer(model: nn.Module, cfg) -> torch.optim.SGD:
    mu_and_deterministic, rho = variational_parameter_groups(model)
    return torch.optim.SGD([
        {"params": mu_and_deterministic, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": rho, "lr": cfg.lr_rho, "weight_decay": 0.0},
    ], momentum=cfg.momentum)


@dataclass
class BenchPath:
    """One implementation under test: a model copy, its optimiser and how it computes a step."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    kl: Callable[[nn.Module, float], torch.Tensor]
    masked_step: Callable[[int], None]
    reference: bool

    def context(self):
        return reference_path(self.model) if self.reference else contextlib.nullcontext()


def train_step(path: BenchPath, x: torch.Tensor, y: torch.Tensor, step: int, beta: float, prior_std: float,
               grads_out: dict | None = None) -> torch.Tensor:
    with path.context():
        ce = F.cross_entropy(path.model(x), y)
        kl = path.kl(path.model, prior_std)
        loss = ce + beta * kl
        path.optimizer.zero_grad(set_to_none=True)
        loss.backward()
    if grads_out is not None:
        grads_out.update({n: p.grad.detach().clone() for n, p in path.model.named_parameters() if p.grad is not None})
    path.masked_step(step)
    return loss.detach()


def eval_step(path: BenchPath, x: torch.Tensor) -> torch.Tensor:
    with path.context(), torch.no_grad():
        return path.model(x)


def compare_grads(a: dict, b: dict) -> dict:
    """Per parameter: max |a - b| relative to max |a|, and ||a - b|| / ||a||; the worst over parameters."""
    max_abs, max_rel, max_l2, worst = 0.0, 0.0, 0.0, None
    missing = sorted(set(a) ^ set(b))
    for name in sorted(set(a) & set(b)):
        diff = (a[name] - b[name]).double()
        max_diff = float(diff.abs().max())
        scale, norm = float(a[name].abs().max()), float(a[name].double().norm())
        rel = max_diff / scale if scale > 0 else (0.0 if max_diff == 0 else math.inf)
        l2 = float(diff.norm()) / norm if norm > 0 else (0.0 if max_diff == 0 else math.inf)
        max_abs, max_l2 = max(max_abs, max_diff), max(max_l2, l2)
        if rel > max_rel:
            max_rel, worst = rel, name
    return {"grad_max_abs_diff": max_abs, "grad_max_rel_diff": max_rel, "grad_worst_parameter": worst,
            "grad_max_rel_l2_diff": max_l2, "grad_parameters_compared": len(set(a) & set(b)),
            "grad_parameters_missing": missing}


def benchmark_model(arch: str, width: float, batch: int, image_size: int, density: float, steps: int, warmup: int,
                    device: torch.device, seed: int) -> dict:
    from .subspace import select_sparse_layers

    model, method, cfg = build_model(arch, width, density, seed, device)
    prior_std, beta = cfg.prior_std, cfg.kl_scale / NUM_TRAIN
    reference_model = copy.deepcopy(model)
    reference_layers = select_sparse_layers(reference_model, method.layout) if method.layers else {}
    production = BenchPath("production", model, make_optimizer(model, cfg), total_kl,
                           lambda step: method.step(step, production.optimizer), reference=False)
    reference = BenchPath("reference", reference_model, make_optimizer(reference_model, cfg), reference_total_kl,
                          lambda step: reference_masked_step(reference.optimizer, reference_layers), reference=True)
    paths = [reference, production]

    data_gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, 3, image_size, image_size, generator=data_gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=data_gen).to(device)

    sparse = method.layers
    n_active = sum(int(l.mask.sum()) for l in sparse.values())
    n_total = sum(l.mask.numel() for l in sparse.values())
    model_info = {
        "arch": arch, "width": width,
        "bayesian_layers": sum(isinstance(m, BayesianLayer) for m in model.modules()),
        "sparse_layers": len(sparse), "density_of_sparse_layers": n_active / n_total if n_total else 1.0,
        "parameters": sum(p.numel() for p in model.parameters()), "method": cfg.method,
    }

    # --- training steps: the first one under the same seed doubles as the equivalence check ---------
    for p in paths:
        p.model.train()
        set_mode(p.model, "lrt")
    times = {p.name: [] for p in paths}
    check: dict = {}
    phase_start = time.perf_counter()
    total = warmup + steps
    for i in range(total):
        order = paths if i % 2 == 0 else paths[::-1]
        for p in order:
            torch.manual_seed(seed * 1_000 + i)  # same LRT noise for both paths at step i
            if i == 0:
                grads: dict = {}
                loss = train_step(p, x, y, i + 1, beta, prior_std, grads)
                check[p.name] = (float(loss), grads)
                continue
            start = time.perf_counter()
            _sync(device)
            train_step(p, x, y, i + 1, beta, prior_std)
            _sync(device)
            if i >= warmup:
                times[p.name].append(time.perf_counter() - start)
        if i == 0 or (i + 1) % max(1, total // 4) == 0:
            log(f"train step {i + 1}/{total}")
    (ref_loss, ref_grads), (prod_loss, prod_grads) = check["reference"], check["production"]
    first = {"loss_reference": ref_loss, "loss_production": prod_loss, "loss_max_abs_diff": abs(ref_loss - prod_loss)}
    first.update(compare_grads(ref_grads, prod_grads))
    del check, ref_grads, prod_grads
    train = {p.name: summarize(times[p.name], batch) for p in paths}
    train["production_vs_reference"] = ratio(train["production"], train["reference"])
    train["paired_ratio_median"] = paired_ratio(times["production"], times["reference"])
    train["steps"], train["warmup"] = steps, warmup
    train["wall_time_s"] = time.perf_counter() - phase_start
    phase_start = time.perf_counter()

    # --- evaluation throughput: posterior-mean forward, no grad -------------------------------------
    # same weights and BatchNorm statistics in both (the two training runs drift apart by rounding)
    reference.model.load_state_dict(production.model.state_dict())
    for p in paths:
        p.model.eval()
        set_mode(p.model, "mean")
    eval_times = {p.name: [] for p in paths}
    eval_repeats = max(steps, 3)
    for i in range(warmup + eval_repeats):
        for p in (paths if i % 2 == 0 else paths[::-1]):
            t = timed(lambda: eval_step(p, x), device)
            if i >= warmup:
                eval_times[p.name].append(t)
    with torch.no_grad():
        eval_diff = float((eval_step(reference, x) - eval_step(production, x)).abs().max())
    evaluation = {p.name: summarize(eval_times[p.name], batch) for p in paths}
    evaluation["production_vs_reference"] = ratio(evaluation["production"], evaluation["reference"])
    evaluation["paired_ratio_median"] = paired_ratio(eval_times["production"], eval_times["reference"])
    evaluation["output_max_abs_diff"] = eval_diff
    evaluation["repeats"] = eval_repeats
    evaluation["wall_time_s"] = time.perf_counter() - phase_start
    for p in paths:
        p.model.train()
        set_mode(p.model, "lrt")
    return {"model": model_info, "train_step": train, "eval": evaluation, "first_step_check": first}


# --------------------------------------------------------------------------------------------
# the trainer's speed options (the GPU fast path): whole training epochs of ssvi.trainer
# --------------------------------------------------------------------------------------------

_SPEED_OPTIONS: dict[str, dict] = {
    "data_on_device": {"data_on_device": True},
    "channels_last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
}
SPEED_VARIANTS: dict[str, dict] = {
    "plain": {}, **_SPEED_OPTIONS,
    "fast": {key: value for option in _SPEED_OPTIONS.values() for key, value in option.items()},
}


def synthetic_cifar(num_train: int, image_size: int, seed: int):
    """Random CIFAR-shaped images and labels with CIFAR-10's normalisation and augmentation (learns nothing)."""
    from .data import CIFAR10_MEAN, CIFAR10_STD, Dataset

    gen = torch.Generator().manual_seed(seed + 2)
    x = torch.rand(num_train, 3, image_size, image_size, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (num_train,), generator=gen)
    return Dataset("synthetic-cifar", x, y, x[:1], y[:1], NUM_CLASSES, CIFAR10_MEAN, CIFAR10_STD, augment=True)


def count_host_syncs(fn: Callable[[], object], device: torch.device) -> dict:
    """Synchronising CUDA calls made by ``fn`` (CUDA's sync debug mode), counted per Python call site."""
    if device.type != "cuda":
        return {"checked": False, "why": "only CUDA can detect host synchronisations"}
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    sites: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message):
            site = f"{Path(w.filename).name}:{w.lineno}"
            sites[site] = sites.get(site, 0) + 1
    return {"checked": True, "syncs": sum(sites.values()), "sites": sites}


def benchmark_speed_variants(arch: str, width: float, batch: int, image_size: int, density: float, steps: int,
                             repeats: int, device: torch.device, seed: int, variants: list[str]) -> dict:
    """Samples/s of whole training epochs of the real trainer (:func:`ssvi.trainer.train_one_epoch`: batch
    gathering, augmentation, LRT step, masked optimiser step, epoch bookkeeping) for each speed variant,
    on ``steps`` batches of synthetic CIFAR-shaped data. Epochs of the variants are interleaved; the first
    epoch of each is the warm-up and, run from the same seed, shows how far each variant's numerics
    move the loss away from the plain path's."""
    from .config import RunConfig
    from .trainer import build_run, train_one_epoch

    data = synthetic_cifar(steps * batch, image_size, seed)
    dense = density >= 1.0
    runs = {}
    for name in variants:
        cfg = RunConfig(method="dense_vi" if dense else "ssvi", arch=arch, width=width, density=min(density, 1.0),
                        batch_size=batch, epochs=repeats + 2, delta_t=10**9, seed=seed, device=str(device),
                        **SPEED_VARIANTS[name])
        runs[name] = build_run(cfg, data=data)
        runs[name].method.initialize(runs[name].model)
    times: dict[str, list[float]] = {name: [] for name in variants}
    first_loss: dict[str, float] = {}
    for rep in range(repeats + 1):
        for name in (variants if rep % 2 == 0 else variants[::-1]):
            run = runs[name]
            if rep == 0:
                torch.manual_seed(seed)  # the same LRT noise for every variant's first epoch
            rows: list[dict] = []
            seconds = timed(lambda: rows.append(train_one_epoch(run)), device)
            run.epoch += 1
            if rep == 0:
                first_loss[name] = rows[0]["loss"]
            else:
                times[name].append(seconds / steps)
        log(f"speed variants: epoch {rep + 1}/{repeats + 1}")
    result: dict = {"variants": {}, "steps_per_epoch": steps, "repeats": repeats}
    for name in variants:
        summary = summarize(times[name], batch)
        summary["overrides"] = SPEED_VARIANTS[name]
        summary["first_epoch_loss"] = first_loss[name]
        if "plain" in first_loss:
            summary["first_epoch_loss_rel_diff_vs_plain"] = abs(first_loss[name] / first_loss["plain"] - 1)
            summary["speedup_vs_plain"] = statistics.median(times["plain"]) / summary["median_s"]
        summary["host_syncs_in_one_epoch"] = count_host_syncs(lambda: train_one_epoch(runs[name]), device)
        result["variants"][name] = summary
    return result


# --------------------------------------------------------------------------------------------
# real sparse compute: im2col + sparse matmul, sampled weight gradients
# --------------------------------------------------------------------------------------------

@dataclass
class Geometry:
    """How a layer's input becomes the [K, N] column matrix its weight [C_out, K] multiplies."""

    kind: str                       # "conv" or "linear"
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @classmethod
    def of(cls, layer: BayesianLayer) -> "Geometry":
        if isinstance(layer, BayesLinear):
            return cls("linear")
        if not isinstance(layer, BayesConv2d) or layer.groups != 1 or isinstance(layer.padding, str):
            raise ValueError("sparse route: only linear layers and ungrouped, numerically padded convolutions")
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        return cls("conv", pair(layer.kernel_size), pair(layer.stride), pair(layer.padding), pair(layer.dilation))

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def im2col(self, x: torch.Tensor) -> torch.Tensor:
        """[K, N] columns: K = C * kh * kw (the weight's order), N = B * H_out * W_out. One copy."""
        if self.kind == "linear":
            return x.t()
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        b, c, h, w = x.shape
        ho, wo = self.out_hw(h, w)
        xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x.contiguous()
        s_b, s_c, s_h, s_w = xp.stride()
        view = xp.as_strided((c, kh, kw, b, ho, wo), (s_c, dh * s_h, dw * s_w, s_b, sh * s_h, sw * s_w))
        return view.reshape(c * kh * kw, b * ho * wo)

    def col2im(self, cols: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
        """Adjoint of :meth:`im2col` (overlapping windows summed)."""
        if self.kind == "linear":
            return cols.t()
        b, c, h, w = x_shape
        ho, wo = self.out_hw(h, w)
        blocks = cols.view(cols.shape[0], b, ho * wo).permute(1, 0, 2)
        return F.fold(blocks, (h, w), self.kernel, dilation=self.dilation, padding=self.padding, stride=self.stride)

    def rows_to_out(self, rows: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
        """[C_out, N] -> the layer output layout ([B, C_out, H_out, W_out] or [B, C_out]); a view."""
        if self.kind == "linear":
            return rows.t()
        b, _, h, w = x_shape
        ho, wo = self.out_hw(h, w)
        return rows.view(rows.shape[0], b, ho, wo).permute(1, 0, 2, 3)

    def out_to_rows(self, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return out.t()
        return out.permute(1, 0, 2, 3).reshape(out.shape[1], -1)


def _index_map(index_plus_one: torch.Tensor, layout: str, blocksize: tuple[int, int] | None = None):
    """Sparse structure of ``index_plus_one`` (a float64 [rows, cols] matrix holding active-entry index + 1,
    0 elsewhere) in ``layout``; returns (crow, col, value index into [0] + active values)."""
    if layout == "csr":
        s = index_plus_one.to_sparse_csr()
        return s.crow_indices(), s.col_indices(), s.values().long()
    s = index_plus_one.to_sparse_bsr(blocksize)
    return s.crow_indices(), s.col_indices(), s.values().long()


class SparsePattern:
    """A fixed sparsity pattern of a [C_out, K] weight matrix, in CSR or BSR, and of its transpose.

    Weights live as a vector of active values (row-major order of the mask); the sparse matrices are
    assembled from it by a precomputed gather (BSR stores explicit zeros inside active blocks)."""

    def __init__(self, mask2d: torch.Tensor, layout: str = "csr", blocksize: tuple[int, int] | None = None,
                 dtype: torch.dtype = torch.float32):
        with warnings.catch_warnings():  # "sparse support is in beta" (warned once per process)
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*beta.*")
            self._build(mask2d, layout, blocksize, dtype)

    def _build(self, mask2d: torch.Tensor, layout: str, blocksize: tuple[int, int] | None, dtype) -> None:
        self.layout, self.blocksize = layout, blocksize
        self.shape = tuple(mask2d.shape)
        self.nnz = int(mask2d.sum())
        index = torch.zeros(self.shape, dtype=torch.float64, device=mask2d.device)
        index[mask2d] = torch.arange(1, self.nnz + 1, dtype=torch.float64, device=mask2d.device)
        self.crow, self.col, self.gather = _index_map(index, layout, blocksize)
        tb = blocksize[::-1] if blocksize else None
        self.crow_t, self.col_t, self.gather_t = _index_map(index.t().contiguous(), layout, tb)
        # the element pattern for weight gradients at active entries only (always CSR)
        if layout == "csr":
            zeros = torch.zeros(self.nnz, dtype=dtype, device=mask2d.device)
            self.grad_pattern = torch.sparse_csr_tensor(self.crow, self.col, zeros, self.shape, check_invariants=False)
        else:
            csr = SparsePattern(mask2d, "csr", dtype=dtype)
            self.grad_pattern = csr.grad_pattern
        self.stored = int(self.gather.numel())  # stored values including explicit zeros (BSR)

    def _assemble(self, values: torch.Tensor, crow, col, gather, shape, blocksize) -> torch.Tensor:
        padded = torch.cat([values.new_zeros(1), values])
        stored = padded[gather]
        if self.layout == "csr":
            return torch.sparse_csr_tensor(crow, col, stored, shape, check_invariants=False)
        return torch.sparse_bsr_tensor(crow, col, stored, shape, check_invariants=False)

    def weight(self, values: torch.Tensor) -> torch.Tensor:
        if self.layout == "csr":  # CSR values are the active values in mask order: no gather
            return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)
        return self._assemble(values, self.crow, self.col, self.gather, self.shape, self.blocksize)

    def weight_t(self, values: torch.Tensor) -> torch.Tensor:
        return self._assemble(values, self.crow_t, self.col_t, self.gather_t, self.shape[::-1], None)

    def sampled_grad(self, grad_rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(grad_rows @ cols^T) at the active entries only, as the vector of active values."""
        return torch.sparse.sampled_addmm(self.grad_pattern, grad_rows, cols.t(), beta=0.0).values()


class _SparseLRT(torch.autograd.Function):
    """Mean and variance products of the LRT with sparse weights sharing one im2col.

    forward: cols = im2col(x); mean = W_mu @ cols; var = W_var @ cols^2 (sparse @ dense)
    backward: d cols = W_mu^T @ d mean + 2 cols * (W_var^T @ d var) (sparse transposes), one col2im;
              d values = (d rows @ cols^T) sampled at active entries (``sampled_addmm``)."""

    @staticmethod
    def forward(ctx, x, mu_values, var_values, pattern: SparsePattern, geometry: Geometry):
        cols = geometry.im2col(x)
        mean = torch.sparse.mm(pattern.weight(mu_values), cols)
        var = torch.sparse.mm(pattern.weight(var_values), cols * cols)
        ctx.save_for_backward(cols, mu_values, var_values)  # cols: K/C times the input's memory, saves an im2col
        ctx.pattern, ctx.geometry, ctx.x_shape = pattern, geometry, x.shape
        return geometry.rows_to_out(mean, x.shape), geometry.rows_to_out(var, x.shape)

    @staticmethod
    def backward(ctx, d_mean, d_var):
        cols, mu_values, var_values = ctx.saved_tensors
        pattern, geometry = ctx.pattern, ctx.geometry
        cols_sq = cols * cols
        d_mean_rows, d_var_rows = geometry.out_to_rows(d_mean), geometry.out_to_rows(d_var)
        d_x = d_mu = d_var_values = None
        if ctx.needs_input_grad[1]:
            d_mu = pattern.sampled_grad(d_mean_rows, cols)
        if ctx.needs_input_grad[2]:
            d_var_values = pattern.sampled_grad(d_var_rows, cols_sq)
        if ctx.needs_input_grad[0]:
            d_cols = torch.sparse.mm(pattern.weight_t(mu_values), d_mean_rows)
            d_cols = d_cols.addcmul_(torch.sparse.mm(pattern.weight_t(var_values), d_var_rows), cols, value=2.0)
            d_x = geometry.col2im(d_cols, ctx.x_shape)
        return d_x, d_mu, d_var_values, None, None


class SparseLRTLayer(nn.Module):
    """The LRT forward of a Bayesian layer with only its active weights stored and computed on.

    Parameters are the active entries of mu and rho (vectors); the output equals the production
    layer's for the same seed (one randn of the output shape per call)."""

    def __init__(self, layer: BayesianLayer, layout: str = "csr", blocksize: tuple[int, int] | None = None):
        super().__init__()
        self.geometry = Geometry.of(layer)
        c_out = layer.weight_mu.shape[0]
        mask2d = layer.mask.reshape(c_out, -1)
        self.pattern = SparsePattern(mask2d, layout, blocksize, layer.weight_mu.dtype)
        self.mu = nn.Parameter(layer.weight_mu.detach().reshape(c_out, -1)[mask2d].clone())
        self.rho = nn.Parameter(layer.weight_rho.detach().reshape(c_out, -1)[mask2d].clone())
        self.bias = nn.Parameter(layer.bias.detach().clone()) if layer.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var_values = F.softplus(self.rho).pow(2)
        mean, var = _SparseLRT.apply(x, self.mu, var_values, self.pattern, self.geometry)
        if self.bias is not None:
            mean = mean + (self.bias.view(1, -1, 1, 1) if self.geometry.kind == "conv" else self.bias)
        noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device)  # = randn_like(contiguous output)
        return mean + torch.sqrt(var + LRT_EPS) * noise


def micro_shapes(width: float, image_size: int) -> list[dict]:
    """Layer shapes of the CIFAR ResNet-18 at ``width`` (spatial sizes scaled with ``image_size``)."""
    from .models import scaled
    c = [scaled(v, width) for v in (64, 128, 256, 512)]
    hw = [max(1, image_size // 2**i) for i in range(4)]
    shapes = [{"name": f"conv3x3_{c[i]}x{c[i]}_{hw[i]}x{hw[i]}", "kind": "conv", "in": c[i], "out": c[i],
               "kernel": 3, "stride": 1, "padding": 1, "hw": hw[i]} for i in range(4)]
    shapes.append({"name": f"conv1x1_{c[0]}to{c[1]}_stride2_{hw[0]}x{hw[0]}", "kind": "conv", "in": c[0],
                   "out": c[1], "kernel": 1, "stride": 2, "padding": 0, "hw": hw[0]})
    shapes.append({"name": f"linear_{c[3]}to{NUM_CLASSES}", "kind": "linear", "in": c[3], "out": NUM_CLASSES})
    shapes.append({"name": f"linear_{c[3]}to{c[3]}", "kind": "linear", "in": c[3], "out": c[3]})
    return shapes


def _make_layer(shape: dict, density: float, seed: int, device: torch.device) -> BayesianLayer:
    from .subspace import random_mask, zero_inactive
    torch.manual_seed(seed)
    if shape["kind"] == "conv":
        layer = BayesConv2d(shape["in"], shape["out"], shape["kernel"], shape["stride"], shape["padding"], bias=False)
    else:
        layer = BayesLinear(shape["in"], shape["out"], bias=True)
    layer = layer.to(device)
    with torch.no_grad():
        layer.mask.copy_(random_mask(layer.mask.shape, density, torch.Generator().manual_seed(seed + 7)))
    zero_inactive({"layer": layer})
    return layer


def _block_mask_layer(layer: BayesianLayer, density: float, block: tuple[int, int], seed: int) -> BayesianLayer:
    """Copy of ``layer`` whose mask is whole (bh x bw) blocks of the [C_out, K] matrix at ``density``."""
    from .subspace import random_mask, zero_inactive
    twin = copy.deepcopy(layer)
    c_out = twin.mask.shape[0]
    k = twin.mask[0].numel()
    blocks = random_mask(torch.Size([c_out // block[0], k // block[1]]), density, torch.Generator().manual_seed(seed))
    mask2d = blocks.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
    with torch.no_grad():
        twin.mask.copy_(mask2d.view_as(twin.mask).to(twin.mask.device))
        # inactive mu and rho were zeroed for the random mask: give newly active entries proper values
        fresh = twin.mask & ~layer.mask
        twin.weight_mu[fresh] = torch.randn(int(fresh.sum()), device=fresh.device) * PosteriorInit().mu_std
        twin.weight_rho[fresh] = layer.weight_rho[layer.mask].mean()
    zero_inactive({"layer": twin})
    return twin


def _pick_block(c_out: int, k: int) -> tuple[int, int] | None:
    for b in (BSR_BLOCK, 2):
        if c_out % b == 0 and k % b == 0:
            return (b, b)
    return None


def _input(shape: dict, batch: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input (requires grad, as for any layer but the first) and a fixed upstream gradient."""
    g = torch.Generator().manual_seed(seed)
    if shape["kind"] == "conv":
        x = torch.randn(batch, shape["in"], shape["hw"], shape["hw"], generator=g)
        ho = (shape["hw"] + 2 * shape["padding"] - shape["kernel"]) // shape["stride"] + 1
        grad = torch.randn(batch, shape["out"], ho, ho, generator=g)
    else:
        x = torch.randn(batch, shape["in"], generator=g)
        grad = torch.randn(batch, shape["out"], generator=g)
    return x.to(device).requires_grad_(), grad.to(device)


def _fwd_bwd(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    x.grad = None
    for p in module.parameters():
        p.grad = None
    out = module(x)
    out.backward(grad)
    return out


def _seeded_run(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, seed: int,
                device: torch.device) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One forward+backward under ``seed``: (seconds, output, input gradient)."""
    torch.manual_seed(seed)
    _sync(device)
    start = time.perf_counter()
    out = _fwd_bwd(module, x, grad)
    _sync(device)
    elapsed = time.perf_counter() - start
    dx = x.grad.clone()
    x.grad = None
    return elapsed, out.detach(), dx


def _compare(dense: BayesianLayer, dense_run, sparse: SparseLRTLayer, sparse_run) -> dict:
    """Max abs (and max relative) differences of output and every gradient, sparse vs dense masked."""
    c_out = dense.weight_mu.shape[0]
    mask2d = dense.mask.reshape(c_out, -1)
    pairs = {
        "output": (dense_run[1], sparse_run[1]), "grad_input": (dense_run[2], sparse_run[2]),
        "grad_mu": (dense.weight_mu.grad.reshape(c_out, -1)[mask2d], sparse.mu.grad),
        "grad_rho": (dense.weight_rho.grad.reshape(c_out, -1)[mask2d], sparse.rho.grad),
    }
    if dense.bias is not None:
        pairs["grad_bias"] = (dense.bias.grad, sparse.bias.grad)
    result = {}
    for name, (a, b) in pairs.items():
        diff = float((a - b).abs().max()) if a.numel() else 0.0
        scale = float(a.abs().max()) if a.numel() else 0.0
        result[f"{name}_max_abs_diff"] = diff
        result[f"{name}_max_rel_diff"] = diff / scale if scale > 0 else diff
    result["max_rel_diff"] = max(v for k, v in result.items() if k.endswith("_rel_diff"))
    return result


def verify_sparse_route(dense: BayesianLayer, sparse: SparseLRTLayer, x: torch.Tensor, grad: torch.Tensor,
                        seed: int = 0, device: torch.device = torch.device("cpu")) -> dict:
    """Run both under the same seed and compare outputs and gradients (active entries for mu/rho)."""
    dense_run = _seeded_run(dense, x, grad, seed, device)
    sparse_run = _seeded_run(sparse, x, grad, seed, device)
    return _compare(dense, dense_run, sparse, sparse_run)


def _inner_calls(seconds: float) -> int:
    """Calls per timing sample so that one sample lasts >= MICRO_MIN_SAMPLE_S."""
    return max(1, math.ceil(MICRO_MIN_SAMPLE_S / max(seconds, 1e-9)))


def benchmark_sparse_routes(width: float, batch: int, image_size: int, device: torch.device, seed: int,
                            densities=MICRO_DENSITIES, routes=MICRO_ROUTES, repeats: int = 2) -> dict:
    """Layer-level microbenchmark: production dense masked LRT layer vs sparse routes, per shape and density."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*beta.*")
        return _benchmark_sparse_routes(width, batch, image_size, device, seed, densities, routes, repeats)


def _benchmark_sparse_routes(width, batch, image_size, device, seed, densities, routes, repeats) -> dict:
    results = []
    shapes = micro_shapes(width, image_size)
    for si, shape in enumerate(shapes):
        log(f"sparse routes: {shape['name']} ({si + 1}/{len(shapes)})")
        x, grad = _input(shape, batch, device, seed)
        entry = {**shape, "batch": batch, "dense": {}, "routes": {}}
        for density in densities:
            dense = _make_layer(shape, density, seed, device)
            c_out, k = dense.weight_mu.shape[0], dense.mask[0].numel()
            block = _pick_block(c_out, k)
            candidates: dict[str, tuple[nn.Module, BayesianLayer]] = {}
            per_route: dict[str, dict] = {}
            for route in routes:
                try:
                    if route == "csr":
                        candidates[route] = (SparseLRTLayer(dense, "csr"), dense)
                    elif block is None:
                        per_route[route] = {"skipped": f"no block size in ({BSR_BLOCK}, 2) divides {c_out}x{k}"}
                    elif route == "bsr":
                        candidates[route] = (SparseLRTLayer(dense, "bsr", block), dense)
                    elif route == "bsr_block":
                        twin = _block_mask_layer(dense, density, block, seed + 11)
                        candidates[route] = (SparseLRTLayer(twin, "bsr", block), twin)
                    else:
                        per_route[route] = {"skipped": f"unknown route {route!r}; known: {', '.join(ALL_ROUTES)}"}
                except Exception as error:  # a route that cannot run is a result too
                    per_route[route] = {"error": f"{type(error).__name__}: {error}"}
            # verification runs (same seed) double as warm-up and calibrate the calls per sample
            verify_seed = seed + 3
            runs: dict[BayesianLayer, tuple] = {}
            runners, first_seconds = {}, {}
            try:
                runs[dense] = _seeded_run(dense, x, grad, verify_seed, device)
                runners["dense"] = (dense, _inner_calls(runs[dense][0]))
                first_seconds["dense"] = runs[dense][0]
                for route, (module, reference_layer) in list(candidates.items()):
                    try:
                        if reference_layer not in runs:
                            runs[reference_layer] = _seeded_run(reference_layer, x, grad, verify_seed, device)
                        sparse_run = _seeded_run(module, x, grad, verify_seed, device)
                        per_route[route] = _compare(reference_layer, runs[reference_layer], module, sparse_run)
                        pat = module.pattern
                        per_route[route].update({
                            "layout": pat.layout, "blocksize": list(pat.blocksize) if pat.blocksize else None,
                            "active": pat.nnz, "stored_values": pat.stored, "weight_numel": c_out * k,
                            "stored_fraction": pat.stored / (c_out * k)})
                        runners[route] = (module, _inner_calls(sparse_run[0]))
                        first_seconds[route] = sparse_run[0]
                    except Exception as error:
                        per_route[route] = {"error": f"{type(error).__name__}: {error}"}
                        del candidates[route]
            finally:
                runs.clear()
            # routes clearly slower than dense (>= MICRO_SLOW_FACTOR in the verification run) are far from
            # the 0.5x target either way: one timed sample each keeps the default run to minutes
            dense_seconds = first_seconds["dense"]
            wanted = {name: (1 if name != "dense" and first_seconds[name] >= MICRO_SLOW_FACTOR * dense_seconds
                             else repeats) for name in runners}
            samples = {name: [] for name in runners}
            names = list(runners)
            for rep in range(max(wanted.values(), default=0)):
                for name in (names if rep % 2 == 0 else names[::-1]):
                    if rep >= wanted[name]:
                        continue
                    module, inner = runners[name]
                    samples[name].append(timed(lambda m=module: _fwd_bwd(m, x, grad), device, inner))
            key = str(density)
            entry["dense"][key] = summarize(samples["dense"], batch)
            entry["dense"][key]["inner_calls_per_sample"] = runners["dense"][1]
            for route in candidates:
                stats = summarize(samples[route], batch)
                stats["inner_calls_per_sample"] = runners[route][1]
                stats["verification_run_s"] = first_seconds[route]
                per_route[route].update(stats)
                per_route[route]["sparse_vs_dense"] = ratio(stats, entry["dense"][key])
            entry["routes"][key] = per_route
            x.grad = None
        results.append(entry)
    return {"densities": list(densities), "routes": list(routes), "repeats": repeats,
            "shapes": results, "summary": _summarize_routes(results, densities, routes)}


def _summarize_routes(results: list[dict], densities, routes) -> dict:
    """Per density and route: the measured sparse/dense ratios over shapes (min, median, max)."""
    summary = {}
    for density in densities:
        key = str(density)
        summary[key] = {}
        for route in routes:
            ratios = {r["name"]: r["routes"][key][route]["sparse_vs_dense"] for r in results
                      if "sparse_vs_dense" in r["routes"][key].get(route, {})}
            if ratios:
                summary[key][route] = {"min": min(ratios.values()), "median": statistics.median(ratios.values()),
                                       "max": max(ratios.values()), "shapes_at_or_below_0.5": sorted(
                                           n for n, v in ratios.items() if v <= 0.5), "per_shape": ratios}
    return summary


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------

def run_benchmark(arch: str = "resnet18", width: float = 1.0, batch: int = 128, image_size: int = 32,
                  density: float = 0.1, steps: int = 12, warmup: int = 2, device: str = "cpu",
                  threads: int | None = None, sparse_routes: bool = True, seed: int = 0,
                  micro_densities=MICRO_DENSITIES, micro_routes=MICRO_ROUTES, micro_repeats: int = 2,
                  speed_variants: tuple[str, ...] = (), speed_steps: int = 10, speed_repeats: int = 3) -> dict:
    """Run the benchmark and return its JSON-serialisable record (see the module docstring)."""
    if steps < 1 or warmup < 1:
        raise ValueError("steps and warmup must be >= 1 (the first warm-up step is the equivalence check)")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for but CUDA is not available")
    options = {"arch": arch, "width": width, "batch": batch, "image_size": image_size, "density": density,
               "steps": steps, "warmup": warmup, "device": device, "threads": threads,
               "sparse_routes": sparse_routes, "seed": seed, "micro_densities": list(micro_densities),
               "micro_routes": list(micro_routes), "micro_repeats": micro_repeats,
               "speed_variants": list(speed_variants), "speed_steps": speed_steps, "speed_repeats": speed_repeats}
    started = time.perf_counter()
    record = {"benchmark": "ssvi-bench Bayesian layer performance",
              "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "options": options, "machine": machine_info(dev)}
    record["machine"]["load_average_start"] = load_average()
    log(f"model {arch} width {width} batch {batch} density {density} on {dev} "
        f"({torch.get_num_threads()} threads)")
    record.update(benchmark_model(arch, width, batch, image_size, density, steps, warmup, dev, seed))
    model_done = time.perf_counter()
    record["sparse_routes"] = (benchmark_sparse_routes(width, batch, image_size, dev, seed, micro_densities,
                                                       micro_routes, micro_repeats)
                               if sparse_routes else None)
    if record["sparse_routes"] is not None:
        record["sparse_routes"]["wall_time_s"] = time.perf_counter() - model_done
    speed_start = time.perf_counter()
    record["speed_variants"] = (benchmark_speed_variants(arch, width, batch, image_size, density, speed_steps,
                                                         speed_repeats, dev, seed, list(speed_variants))
                                if speed_variants else None)
    if record["speed_variants"] is not None:
        record["speed_variants"]["wall_time_s"] = time.perf_counter() - speed_start
    record["machine"]["load_average_end"] = load_average()
    record["notes"] = [
        "times in seconds; ratios are medians: production/reference and sparse/dense (< 1 = faster); "
        "paired_ratio_median = median over repeats of the ratio of the two paths' back-to-back times",
        "train_step: one masked SSVI optimiser step per step; subspace-update steps (every delta_t) are not timed",
        "train_step/eval: reference and production interleaved, alternating which goes first",
        "first_step_check: gradient differences of ~1e-3..1e-2 (max-relative) at width 1 are rounding: the "
        "production's fused addcmul differs from mean + std * eps by an ulp and a ReLU input that lands on the "
        "other side of 0 passes or stops one gradient entry; a semantic difference is O(1)",
        "eval: run on identical weights (the production model's state copied into the reference)",
        f"sparse_routes: {micro_repeats} timed repeats per route after one verification run (also the warm-up), "
        f"reduced to 1 for routes >= {MICRO_SLOW_FACTOR}x slower than dense in that run (see n) to keep the "
        f"default run short; layers faster than {MICRO_MIN_SAMPLE_S} s repeat inside one sample",
        "sparse_routes dense = the production BayesianLayer (LRT forward + backward, dense masked compute); "
        "sparse routes store only active mu/rho and give gradients at active entries only (SSVI's addition "
        "step additionally needs the dense dL/dmu every delta_t steps, not measured here)",
        "bsr: the random SSVI mask stored in blocks (stored_fraction counts the explicit zeros); bsr_block: a "
        "hypothetical block-structured mask at the same density (not SSVI's mask)",
        "speed_variants: seconds per step of whole trainer epochs (data pipeline and bookkeeping included) on "
        "synthetic CIFAR-shaped data, no subspace updates; speedup_vs_plain = plain median / variant median "
        "(> 1 = faster); host_syncs_in_one_epoch counts synchronising CUDA calls of one more epoch (CUDA only; "
        "the epoch plan's copy to the device and the epoch's loss summary are the two expected per epoch)",
        "load_average_start/end show how contended the machine was",
    ]
    record["wall_time_s"] = time.perf_counter() - started
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssvi bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in ALL_ROUTES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown route(s) {unknown}; known: {', '.join(ALL_ROUTES)}")
    return names


def _variants(text: str) -> list[str]:
    if text.strip() == "all":
        return list(SPEED_VARIANTS)
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in SPEED_VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown speed variant(s) {unknown}; known: {', '.join(SPEED_VARIANTS)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench options (shared by ``python -m ssvi bench`` and ``python -m ssvi.bench``)."""
    parser.add_argument("--arch", default="resnet18", help="registered architecture (default: resnet18)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier (default: 1.0)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--image-size", type=int, default=32, help="synthetic CIFAR-shaped input size (default: 32)")
    parser.add_argument("--density", type=float, default=0.1, help="SSVI density (1.0 = dense VI; default: 0.1)")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per path (default: 12)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per path (default: 2)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of model, masks, data and noise (default: 0)")
    parser.add_argument("--no-sparse-routes", dest="sparse_routes", action="store_false",
                        help="skip the layer-level sparse-compute microbenchmark")
    parser.add_argument("--micro-densities", type=_floats, default=list(MICRO_DENSITIES),
                        help="comma-separated densities of the microbenchmark (default: 0.05,0.1,0.2)")
    parser.add_argument("--micro-routes", type=_names, default=list(MICRO_ROUTES),
                        help=f"comma-separated sparse routes from {','.join(ALL_ROUTES)} (default: csr,bsr)")
    parser.add_argument("--micro-repeats", type=int, default=2,
                        help="timed repeats per microbenchmark route after the verification run (default: 2)")
    parser.add_argument("--speed-variants", type=_variants, default=[],
                        help="comma-separated trainer speed variants to time as whole epochs, from "
                             f"{','.join(SPEED_VARIANTS)}, or 'all' (default: none)")
    parser.add_argument("--speed-steps", type=int, default=10, help="batches per timed epoch (default: 10)")
    parser.add_argument("--speed-repeats", type=int, default=3, help="timed epochs per variant (default: 3)")
    parser.add_argument("--out", help="also write the JSON to this file")


def run_from_args(args: argparse.Namespace) -> int:
    record = run_benchmark(args.arch, args.width, args.batch, args.image_size, args.density, args.steps,
                           args.warmup, args.device, args.threads, args.sparse_routes, args.seed,
                           args.micro_densities, args.micro_routes, args.micro_repeats, tuple(args.speed_variants),
                           args.speed_steps, args.speed_repeats)
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
