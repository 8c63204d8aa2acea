"""The benchmark's JSON record and command line: ``python -m ssvi bench [options]`` (``--help``).

    record = run_benchmark(arch="resnet18", width=0.25, batch=32, sparse_routes=False)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import torch

from .routes import (ALL_ROUTES, MICRO_DENSITIES, MICRO_MIN_SAMPLE_S, MICRO_ROUTES, MICRO_SLOW_FACTOR,
                     benchmark_sparse_routes)
from .concurrency import benchmark_concurrency
from .kernel_step import benchmark_kernel_steps
from .speed_variants import SPEED_VARIANTS, benchmark_speed_variants
from .summary import summary_lines
from .timing import load_average, log, machine_info
from .train_step import benchmark_model

JSON_KEYS = ("benchmark", "timestamp", "options", "machine", "model", "train_step", "eval", "first_step_check",
             "sparse_routes", "kernel_steps", "speed_variants", "concurrency", "notes", "wall_time_s")


def run_benchmark(arch: str = "resnet18", width: float = 1.0, batch: int = 128, image_size: int = 32,
                  density: float = 0.1, steps: int = 12, warmup: int = 2, device: str = "cpu",
                  threads: int | None = None, sparse_routes: bool = True, seed: int = 0,
                  micro_densities=MICRO_DENSITIES, micro_routes=MICRO_ROUTES, micro_repeats: int = 2,
                  speed_variants: tuple[str, ...] = (), speed_steps: int = 10, speed_repeats: int = 3,
                  concurrency: tuple[int, ...] = (), concurrency_variant: str = "plain",
                  kernel_steps: bool = False, kernel_densities=MICRO_DENSITIES, kernel_step_repeats: int = 3,
                  delta_t: int = 100) -> dict:
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
               "speed_variants": list(speed_variants), "speed_steps": speed_steps, "speed_repeats": speed_repeats,
               "concurrency": list(concurrency), "concurrency_variant": concurrency_variant,
               "kernel_steps": kernel_steps, "kernel_densities": list(kernel_densities),
               "kernel_step_repeats": kernel_step_repeats, "delta_t": delta_t}
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
    if kernel_steps and dev.type != "cpu":
        raise ValueError("--kernel-steps measures the CPU sparse kernels; run it with --device cpu")
    record["kernel_steps"] = (benchmark_kernel_steps(arch, width, batch, image_size, kernel_densities,
                                                     kernel_step_repeats, warmup, seed, delta_t)
                              if kernel_steps else None)
    speed_start = time.perf_counter()
    record["speed_variants"] = (benchmark_speed_variants(arch, width, batch, image_size, density, speed_steps,
                                                         speed_repeats, dev, seed, list(speed_variants))
                                if speed_variants else None)
    if record["speed_variants"] is not None:
        record["speed_variants"]["wall_time_s"] = time.perf_counter() - speed_start
    concurrency_start = time.perf_counter()
    record["concurrency"] = (benchmark_concurrency(arch, width, batch, image_size, density, speed_steps, speed_repeats,
                                                   dev, seed, list(concurrency), concurrency_variant)
                             if concurrency else None)
    if record["concurrency"] is not None:
        record["concurrency"]["wall_time_s"] = time.perf_counter() - concurrency_start
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
        "sparse_routes kernel = the project's sparse LRT kernels (ssvi.sparse_lrt, run option sparse_kernel), "
        "one index traversal for both LRT products, gradients at active entries only",
        "kernel_steps: whole SSVI training steps of one model per density, the routes dense / all / auto taking "
        "turns (rotating which goes first); *_whole_run_ratio adds the dense subspace-update steps (one in "
        "delta_t during the first 75% of training), computed from the measured medians",
        "sparse_routes dense = the production BayesianLayer (LRT forward + backward, dense masked compute); "
        "sparse routes store only active mu/rho and give gradients at active entries only (SSVI's addition "
        "step additionally needs the dense dL/dmu every delta_t steps, not measured here)",
        "bsr: the random SSVI mask stored in blocks (stored_fraction counts the explicit zeros); bsr_block: a "
        "hypothetical block-structured mask at the same density (not SSVI's mask)",
        "speed_variants: seconds per step of whole trainer epochs (data pipeline and bookkeeping included) on "
        "synthetic CIFAR-shaped data, no subspace updates; speedup_vs_plain = plain median / variant median "
        "(> 1 = faster); host_syncs_in_one_epoch counts synchronising CUDA calls of one more epoch (CUDA only; "
        "the epoch plan's copy to the device and the epoch's loss summary are the two expected per epoch)",
        "concurrency: N spawned training processes on one device (synthetic data, the concurrency variant's "
        "options, --speed-steps batches x --speed-repeats timed epochs each after one warm-up epoch, started "
        "together); aggregate_samples_per_s = all samples / (last end - first start); on a CPU each process "
        "gets cpu_count // N threads",
        "load_average_start/end show how contended the machine was",
    ]
    record["wall_time_s"] = time.perf_counter() - started
    return record


def build_parser() -> argparse.ArgumentParser:
    from .. import bench  # the package docstring describes every part of the record
    parser = argparse.ArgumentParser(prog="ssvi bench", description=bench.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _choices(text: str, known, what: str) -> list[str]:
    """Comma-separated names, each one of ``known``."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}(s) {unknown}; known: {', '.join(known)}")
    return names


def _names(text: str) -> list[str]:
    return _choices(text, ALL_ROUTES, "route")


def _variants(text: str) -> list[str]:
    return list(SPEED_VARIANTS) if text.strip() == "all" else _choices(text, list(SPEED_VARIANTS), "speed variant")


def _levels(text: str) -> list[int]:
    levels = [int(v) for v in text.split(",") if v.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be integers >= 1, got {text!r}")
    return levels


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
    parser.add_argument("--concurrency", type=_levels, default=[],
                        help="comma-separated numbers of training processes sharing the device, e.g. 1,2,4 "
                             "(aggregate samples/s per level; default: none)")
    parser.add_argument("--concurrency-variant", choices=list(SPEED_VARIANTS), default="plain",
                        help="speed variant of the concurrency processes (default: plain; on a GPU: fast)")
    parser.add_argument("--kernel-steps", action="store_true",
                        help="time whole SSVI steps with the sparse LRT kernels (all, auto) against the dense step")
    parser.add_argument("--kernel-densities", type=_floats, default=list(MICRO_DENSITIES),
                        help="densities of --kernel-steps (default: 0.05,0.1,0.2)")
    parser.add_argument("--kernel-step-repeats", type=int, default=3,
                        help="timed steps per route and density after --warmup (default: 3)")
    parser.add_argument("--delta-t", type=int, default=100,
                        help="subspace-update interval for the whole-run ratio of --kernel-steps (default: 100)")
    parser.add_argument("--out", help="write the full JSON record to this file (stdout gets a one-screen summary)")


def run_from_args(args: argparse.Namespace) -> int:
    record = run_benchmark(args.arch, args.width, args.batch, args.image_size, args.density, args.steps,
                           args.warmup, args.device, args.threads, args.sparse_routes, args.seed,
                           args.micro_densities, args.micro_routes, args.micro_repeats, tuple(args.speed_variants),
                           args.speed_steps, args.speed_repeats, tuple(args.concurrency), args.concurrency_variant,
                           args.kernel_steps, args.kernel_densities, args.kernel_step_repeats, args.delta_t)
    record["options"]["out"] = args.out
    print("\n".join(summary_lines(record)))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
        print(f"full record: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
