"""Whole epochs of the real trainer for each of its speed options (the GPU fast path), interleaved.

    benchmark_speed_variants("resnet18", 1.0, 128, 32, 0.1, steps=10, repeats=3, device=dev, seed=0,
                             variants=["plain", "fast"])
"""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path
from typing import Callable

import torch

from .timing import log, summarize, timed
from .train_step import NUM_CLASSES

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
    from ..data import CIFAR10_MEAN, CIFAR10_STD, Dataset

    gen = torch.Generator().manual_seed(seed + 2)
    x = torch.rand(num_train, 3, image_size, image_size, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (num_train,), generator=gen)
    return Dataset("synthetic-cifar", x, y, x[:1], y[:1], NUM_CLASSES, CIFAR10_MEAN, CIFAR10_STD, augment=True)


def speed_run(arch: str, width: float, batch: int, density: float, epochs: int, seed: int, device: torch.device,
              variant: str, data):
    """A freshly initialised trainer run (SSVI at ``density``, dense VI at 1.0) with a speed variant's options
    and no subspace updates, on the given data."""
    from ..config import RunConfig
    from ..trainer import build_run

    dense = density >= 1.0
    cfg = RunConfig(method="dense_vi" if dense else "ssvi", arch=arch, width=width, density=min(density, 1.0),
                    batch_size=batch, epochs=epochs, delta_t=10**9, min_subspace_updates=0, seed=seed, device=str(device),
                    **SPEED_VARIANTS[variant])
    run = build_run(cfg, data=data)
    run.method.initialize(run.model)
    return run


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
    from ..trainer import train_one_epoch

    data = synthetic_cifar(steps * batch, image_size, seed)
    runs = {name: speed_run(arch, width, batch, density, repeats + 2, seed, device, name, data) for name in variants}
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
