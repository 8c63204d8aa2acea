"""The disk footprint of a finished run, before and after the compact layout (a measurement, not a test).

    python -m ssvi.bench.footprint --out results/measured/footprint.json      # full width, CPU, ~2 min
    python -m ssvi.bench.footprint --archs resnet18 --densities 1,0.1 --width 0.25

For each architecture and density (dense VI at 1, SSVI below) a run is built at the given width on synthetic
CIFAR-shaped data and trained for a few steps (so the optimiser holds its momentum buffers, as a real
checkpoint does), then its result files are written twice:

  before  the layout runs kept until now: the last checkpoint (mu, rho, masks, momentum, RNG states),
          the dense final model model.pt, predictions.pt, subspace.json, metrics.json
  after   what a finished run keeps now: model_compact.pt (mask bits plus the active mu and rho, with the
          training state), predictions.pt, subspace.json, metrics.json (no checkpoint)

File sizes do not depend on the weights' values (torch.save does not compress), so a few steps measure what
a 200-epoch run keeps. predictions.pt is sized for the real test sets (10,000 images; 10 and 100 classes;
K = 10 samples stored in fp16), and eval_probs.pt (kept by ensemble members only) for CIFAR-10's and
CIFAR-100's evaluation sets. ``--grid`` projects the total over every run of a workflow config.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

import torch

CIFAR_TEST = 10_000
SVHN_TEST = 26_032
CIFAR10C_IMAGES = 19 * 5 * CIFAR_TEST  # 19 corruptions x 5 severities
EVAL_SETS = {10: {"test": CIFAR_TEST, "svhn": SVHN_TEST, "cifar100": CIFAR_TEST, "cifar10c": CIFAR10C_IMAGES},
             100: {"test": CIFAR_TEST, "svhn": SVHN_TEST, "cifar10": CIFAR_TEST}}


def torch_bytes(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def predictions_bytes(classes: int, samples: int = 10, n: int = CIFAR_TEST) -> int:
    """predictions.pt of a run with ``n`` test points: labels, two fp32 N x C, the K fp16 samples."""
    probs = torch.zeros(n, classes)
    return torch_bytes({"labels": torch.zeros(n, dtype=torch.long), "predictive_probs": probs,
                        "mean_weight_probs": probs, "sample_probs": torch.zeros(samples, n, classes).half()})


def eval_probs_bytes(classes: int) -> int:
    """eval_probs.pt of an ensemble member: fp32 probabilities per evaluation set, mean entropies of the
    test and OOD sets, labels of the shift set."""
    sets = EVAL_SETS[classes]
    kept = {"test": {"probs": torch.zeros(sets["test"], classes), "expected_entropy": torch.zeros(sets["test"])},
            "ood": {name: {"probs": torch.zeros(n, classes), "expected_entropy": torch.zeros(n)}
                    for name, n in sets.items() if name not in ("test", "cifar10c")}, "shift": {}}
    if "cifar10c" in sets:
        per_corruption = sets["cifar10c"] // 19
        kept["shift"] = {f"c{i}": {"probs": torch.zeros(per_corruption, classes),
                                   "labels": torch.zeros(per_corruption, dtype=torch.long), "sizes": [CIFAR_TEST] * 5}
                         for i in range(19)}
    return torch_bytes(kept)


def measure(arch: str, width: float, density: float, steps: int = 2, batch: int = 8) -> dict:
    """Bytes of every file a finished run of this arch / density keeps, in the old and the new layout."""
    from ..config import RunConfig
    from ..results import evaluate_posterior, final_state, write_results
    from ..rundir import save_checkpoint
    from ..trainer import build_run, run_state, train_one_epoch
    from .speed_variants import synthetic_cifar
    method = "dense_vi" if density >= 1 else "ssvi"
    data = synthetic_cifar(steps * batch, 32, seed=0)
    data = type(data)(data.name, data.x_train, data.y_train, data.x_train[:16], data.y_train[:16], data.num_classes,
                      data.mean, data.std, data.augment)
    cfg = RunConfig.from_dict({"method": method, "arch": arch, "width": width, "density": min(density, 1.0),
                               "epochs": 1, "batch_size": batch, "num_samples": 10, "delta_t": 1,
                               "min_subspace_updates": 0, "device": "cpu"})
    run_ = build_run(cfg, data)
    run_.method.initialize(run_.model)
    run_.history.append(train_one_epoch(run_))
    run_.epoch = 1
    metrics, predictions = evaluate_posterior(run_)
    with tempfile.TemporaryDirectory() as before_dir, tempfile.TemporaryDirectory() as after_dir:
        before, after = Path(before_dir), Path(after_dir)
        result = write_results(run_, after, metrics, predictions)
        sizes_after = {name: record["bytes"] for name, record in result["files"].items()}
        sizes_after["metrics.json"] = (after / "metrics.json").stat().st_size
        checkpoint = save_checkpoint(before / "checkpoint.pt", run_state(run_))["bytes"]
        dense_model = torch_bytes({"config": cfg.to_dict(), "model": run_.model.state_dict()})
    small = {k: v for k, v in sizes_after.items() if k not in ("model_compact.pt", "predictions.pt")}
    return {"arch": arch, "width": width, "density": density, "method": method,
            "checkpoint.pt": checkpoint, "model.pt": dense_model, "model_compact.pt": sizes_after["model_compact.pt"],
            "small_files": small, "final_state_keys": sorted(final_state(run_))}


def per_run(row: dict, classes: int, member: bool = False) -> dict:
    """Bytes a finished run keeps (before, after) with predictions of a CIFAR-sized test set."""
    small = sum(row["small_files"].values())
    predictions = predictions_bytes(classes)
    before = row["checkpoint.pt"] + row["model.pt"] + predictions + small
    after = row["model_compact.pt"] + predictions + small + (eval_probs_bytes(classes) if member else 0)
    return {"before": before, "after": after, "ratio": after / before}


def grid_projection(config_path: str, rows: list[dict]) -> dict:
    """Total bytes of every run of a workflow config, before and after, from the measured rows."""
    from ..config import coerce_numbers, load_yaml
    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo / "workflow" / "scripts"))
    import grid
    config = coerce_numbers(load_yaml(config_path))
    members = grid.ensemble_members(config)
    measured = {(r["arch"], r["density"]): r for r in rows}
    totals = {"before": 0, "after": 0, "runs": 0, "unmeasured": []}
    for path, spec in grid.run_grid(config).items():
        row = measured.get((spec.arch, 1.0 if spec.method == "dense_vi" else spec.density))
        if row is None:
            totals["unmeasured"].append(path)
            continue
        sizes = per_run(row, 100 if spec.dataset == "cifar100" else 10, member=path in members)
        totals["before"] += sizes["before"]
        totals["after"] += sizes["after"]
        totals["runs"] += 1
    return {"config": config_path, **totals, "ratio": totals["after"] / max(totals["before"], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssvi.bench.footprint", description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="resnet18,vgg16")
    parser.add_argument("--densities", default="1,0.2,0.1,0.05")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--grid", default="config/paper.yaml", help="workflow config whose total is projected")
    parser.add_argument("--out", help="write the JSON record here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(arch, args.width, float(d)) for arch in args.archs.split(",") for d in args.densities.split(",")]
    for row in rows:
        for classes in (10, 100):
            row[f"cifar{classes}"] = per_run(row, classes)
    record = {"benchmark": "bytes a finished run keeps, old layout (checkpoint + dense model) vs compact",
              "width": args.width, "rows": rows, "predictions_bytes": {c: predictions_bytes(c) for c in (10, 100)},
              "eval_probs_bytes": {c: eval_probs_bytes(c) for c in (10, 100)},
              "grid": grid_projection(args.grid, rows) if args.grid else None}
    for row in rows:
        r = row["cifar10"]
        print(f"{row['arch']:<9} d = {row['density']:<5g} before {r['before'] / 2**20:8.1f} MiB  after "
              f"{r['after'] / 2**20:7.1f} MiB  ratio {r['ratio']:.3f}  (checkpoint {row['checkpoint.pt'] / 2**20:.1f}, "
              f"model.pt {row['model.pt'] / 2**20:.1f}, model_compact.pt {row['model_compact.pt'] / 2**20:.1f} MiB)")
    if record["grid"]:
        g = record["grid"]
        print(f"{g['config']}: {g['runs']} runs, before {g['before'] / 2**30:.1f} GiB, after {g['after'] / 2**30:.1f} "
              f"GiB (ratio {g['ratio']:.3f}){'; not measured: ' + str(len(g['unmeasured'])) if g['unmeasured'] else ''}")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
