"""Whole-model benchmark: SSVI training steps and evaluation of the production layers against the plain
reference layers (:mod:`ssvi.reference`) in one process, interleaved step by step.

    benchmark_model("resnet18", width=1.0, batch=128, image_size=32, density=0.1, steps=12, warmup=2,
                    device=torch.device("cpu"), seed=0)   # -> {"model", "train_step", "eval", "first_step_check"}
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import BayesianLayer, set_mode, total_kl, variational_parameter_groups
from ..reference import reference_masked_step, reference_path, reference_total_kl
from .timing import log, paired_ratio, ratio, summarize, sync, timed

NUM_CLASSES = 10
NUM_TRAIN = 50_000            # CIFAR-10 training-set size: the N of KL/N


def build_model(arch: str, width: float, density: float, seed: int, device: torch.device):
    """Bayesian model with SSVI masks at ``density`` on the layers SSVI sparsifies (1.0 = dense VI), and
    the production method object (its masked optimiser step is the trainer's)."""
    from ..config import RunConfig
    from ..methods import SSVI, Method, TrainContext
    from ..models import create_model

    torch.manual_seed(seed)
    model = create_model(arch, NUM_CLASSES, width, 3, bayesian=True).to(device)
    dense = density >= 1.0
    cfg = RunConfig(method="dense_vi" if dense else "ssvi", arch=arch, width=width, density=min(density, 1.0),
                    min_subspace_updates=0)
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
    from ..subspace import select_sparse_layers

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
            sync(device)
            train_step(p, x, y, i + 1, beta, prior_std)
            sync(device)
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
