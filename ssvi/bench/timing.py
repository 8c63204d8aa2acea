"""Timing helpers of the benchmark: synchronised timers, robust summaries and ratios, the machine.

    seconds = timed(lambda: step(), device)          # one synchronised sample
    summarize(samples, batch)                         # median, p25/p75, min/max, samples/s
    paired_ratio(a_samples, b_samples)                # median of back-to-back ratios (robust to drift)
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)



def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, inner: int = 1) -> float:
    """Seconds per call of ``fn`` (``inner`` calls back to back, synchronised at both ends)."""
    sync(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    sync(device)
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
