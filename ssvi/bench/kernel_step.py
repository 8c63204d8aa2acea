"""Whole SSVI training steps with the project's sparse LRT kernels (run option ``sparse_kernel``) against the
masked dense step, per density, in one process: one model per density, its steps taken in turn by each
route (``dense``, ``all``: sparse kernels in every sparsified layer, ``auto``: per layer whichever path
measured faster), rotating which goes first.

    benchmark_kernel_steps("resnet18", width=1.0, batch=128, image_size=32, densities=(0.05, 0.1, 0.2),
                           steps=3, warmup=1, seed=0, delta_t=100)

The SSVI recipe takes the dense path on its subspace-update steps (one in ``delta_t`` until t_end = 0.75 of
training), so the record also gives the whole-run ratio those steps imply:
0.75 ((delta_t - 1) s + d) / (delta_t d) + 0.25 s / d with s, d the sparse and dense step medians (the
update's own ranking work costs the same on both paths and is left out).
"""

from __future__ import annotations

import time

import torch

from ..layers import set_mode, total_kl
from ..sparse_lrt import route_choices, set_lrt_route
from .timing import log, paired_ratio, summarize
from .train_step import NUM_CLASSES, NUM_TRAIN, BenchPath, build_model, make_optimizer, train_step

KERNEL_ROUTES = ("dense", "all", "auto")
UPDATE_PHASE = 0.75  # t_end_frac of the recipe


def whole_run_ratio(sparse_s: float, dense_s: float, delta_t: int) -> float:
    """Training time with the kernels / without, when one step in delta_t of the update phase is dense."""
    update_phase = ((delta_t - 1) * sparse_s + dense_s) / (delta_t * dense_s)
    return UPDATE_PHASE * update_phase + (1 - UPDATE_PHASE) * sparse_s / dense_s


def benchmark_kernel_steps(arch: str, width: float, batch: int, image_size: int, densities, steps: int,
                           warmup: int, seed: int, delta_t: int) -> dict:
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, 3, image_size, image_size, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    results = {}
    for density in densities:
        model, method, cfg = build_model(arch, width, density, seed, torch.device("cpu"))
        optimizer = make_optimizer(model, cfg)
        path = BenchPath("kernel routes", model, optimizer, total_kl,
                         lambda step: method.step(step, optimizer), reference=False)
        model.train()
        set_mode(model, "lrt")
        beta = cfg.kl_scale / NUM_TRAIN
        times = {route: [] for route in KERNEL_ROUTES}
        started = time.perf_counter()
        step = 0
        for i in range(warmup + steps):
            shift = i % len(KERNEL_ROUTES)
            for route in KERNEL_ROUTES[shift:] + KERNEL_ROUTES[:shift]:
                set_lrt_route(method.layers, route)
                step += 1
                begin = time.perf_counter()
                train_step(path, x, y, step, beta, cfg.prior_std)
                if i >= warmup:
                    times[route].append(time.perf_counter() - begin)
            log(f"kernel steps: density {density} step {i + 1}/{warmup + steps}")
        entry = {route: summarize(times[route], batch) for route in KERNEL_ROUTES}
        for route in ("all", "auto"):
            entry[f"{route}_vs_dense"] = entry[route]["median_s"] / entry["dense"]["median_s"]
            entry[f"{route}_vs_dense_paired"] = paired_ratio(times[route], times["dense"])
            entry[f"{route}_whole_run_ratio"] = whole_run_ratio(entry[route]["median_s"], entry["dense"]["median_s"],
                                                                delta_t)
        entry["auto_choices"] = route_choices(method.layers)
        entry["auto_sparse_layers"] = sorted(name for name, rows in entry["auto_choices"].items()
                                             if rows[-1]["route"] == "sparse")
        entry["wall_time_s"] = time.perf_counter() - started
        results[str(density)] = entry
    return {"routes": list(KERNEL_ROUTES), "densities": list(densities), "steps": steps, "warmup": warmup,
            "delta_t": delta_t, "per_density": results}
