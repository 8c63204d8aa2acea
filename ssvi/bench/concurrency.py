"""Several training processes sharing one device: aggregate samples/s at 1, 2, 4, ... processes.

One CIFAR ResNet-18 at batch 128 leaves a large GPU mostly idle, so running several runs of the grid
side by side on one GPU may finish the grid sooner. Each level starts that many processes (spawned:
each has its own CUDA context), each trains ``repeats`` timed epochs of the real trainer on synthetic
CIFAR-shaped data after one untimed warm-up epoch; all processes of a level start their timed epochs
together (a barrier). Aggregate throughput = all samples of the level / (last end - first start).

    benchmark_concurrency("resnet18", 1.0, 128, 32, 0.1, steps=10, repeats=3, device=torch.device("cuda"),
                          seed=0, levels=[1, 2, 4], variant="fast")

On a CPU every process gets ``cpu_count // level`` threads (at least one), so the processes do not
oversubscribe the cores; on a GPU each keeps torch's default.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import torch

from .speed_variants import speed_run, synthetic_cifar
from .timing import log, sync

WORKER_TIMEOUT_S = 3600


def _worker(index: int, options: dict, barrier, results) -> None:
    """One training process: warm-up epoch, wait for the others, then the timed epochs."""
    from ..trainer import train_one_epoch

    if options["threads"]:
        torch.set_num_threads(options["threads"])
    device = torch.device(options["device"])
    data = synthetic_cifar(options["steps"] * options["batch"], options["image_size"], options["seed"] + index)
    run = speed_run(options["arch"], options["width"], options["batch"], options["density"], options["repeats"] + 2,
                    options["seed"] + index, device, options["variant"], data)
    train_one_epoch(run)
    run.epoch += 1
    sync(device)
    barrier.wait(timeout=WORKER_TIMEOUT_S)
    start = time.monotonic()  # CLOCK_MONOTONIC is system-wide on Linux: comparable across processes
    for _ in range(options["repeats"]):
        train_one_epoch(run)
        run.epoch += 1
    sync(device)
    end = time.monotonic()
    results.put({"process": index, "start": start, "end": end,
                 "samples": options["repeats"] * options["steps"] * options["batch"],
                 "threads": torch.get_num_threads()})


def _run_level(level: int, options: dict) -> dict:
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(level), context.Queue()
    processes = [context.Process(target=_worker, args=(i, options, barrier, results)) for i in range(level)]
    for process in processes:
        process.start()
    rows = [results.get(timeout=WORKER_TIMEOUT_S) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a concurrency worker exited with code {process.exitcode}")
    span = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    samples = sum(r["samples"] for r in rows)
    per_process = sorted(r["samples"] / (r["end"] - r["start"]) for r in rows)
    return {"processes": level, "samples": samples, "span_s": span, "aggregate_samples_per_s": samples / span,
            "per_process_samples_per_s": per_process, "threads_per_process": rows[0]["threads"]}


def benchmark_concurrency(arch: str, width: float, batch: int, image_size: int, density: float, steps: int,
                          repeats: int, device: torch.device, seed: int, levels: list[int], variant: str) -> dict:
    """Aggregate training throughput of ``level`` concurrent processes for each level."""
    cpu_count = os.cpu_count() or 1
    rows = []
    for level in levels:
        threads = max(1, cpu_count // level) if device.type == "cpu" else None
        options = {"arch": arch, "width": width, "batch": batch, "image_size": image_size, "density": density,
                   "steps": steps, "repeats": repeats, "device": str(device), "seed": seed, "variant": variant,
                   "threads": threads}
        log(f"concurrency: {level} process(es)")
        rows.append(_run_level(level, options))
    single = next((r["aggregate_samples_per_s"] for r in rows if r["processes"] == 1), None)
    for row in rows:
        row["speedup_vs_one_process"] = row["aggregate_samples_per_s"] / single if single else None
    return {"variant": variant, "steps_per_epoch": steps, "repeats": repeats, "levels": rows}
