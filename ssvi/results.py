"""The end of a run: evaluate the trained posterior and write the result files, and restore a finished
run's final state for a re-evaluation.

    metrics, predictions = evaluate_posterior(run)      # run: ssvi.trainer.Run after its last epoch
    result = write_results(run, out, metrics, predictions)

``write_results`` writes, each atomically, the final posterior in the compact format with the training state
a re-evaluation needs (``model_compact.pt``), ``predictions.pt``, ``subspace.json`` and last ``metrics.json``,
which records the size and SHA-256 of the other three (``files``), the metrics of the predictive and of the
mean weights, the temperature-scaled view, the curves the figures draw, and the provenance.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import flops
from .evaluate import predict
from .files import file_record, save_torch, write_json
from .metrics import METRIC_VARIANTS, OOD_METRIC_VARIANTS, classification_metrics
from .provenance import provenance
from .rundir import FILES_KEY, FINAL_MODEL, LEGACY_MODEL, METRICS, PREDICTIONS, SUBSPACE_RECORDS, save_final
from .sparse_lrt import route_choices
from .views import CURVES_NOTE, predictive_views

TOP_LEVEL_METRICS = ("acc", "nll", "ece", "ace", "ece_ssvi", "brier", "aurc", "augrc", "nll_floor_hits")


def evaluate_posterior(run) -> tuple[dict, dict]:
    """Metrics of the predictive (K posterior samples, or one forward pass of a point estimate) and of the
    mean weights, the temperature-scaled view and the curves; and the raw predictions."""
    from .trainer import diverged
    data, cfg = run.data, run.cfg
    common = dict(mean=data.mean, std=data.std, batch_size=cfg.eval_batch_size, device=run.device)
    mean_probs = predict(run.model, data.x_test, data.y_test, mode="mean", **common)
    sample_probs = run.method.predictive_samples(run.model, data.x_test, **common)
    run.test_samples = sample_probs
    predictive = sample_probs.mean(0)
    if not (torch.isfinite(predictive).all() and torch.isfinite(mean_probs).all()):
        raise diverged(cfg, "to weights whose predictions are non-finite")
    views = predictive_views(predictive, data.y_test)
    metrics = {**views["metrics"], "mean_weight": classification_metrics(mean_probs, data.y_test),
               "temperature_scaled": views["temperature_scaled"], "curves": views["curves"],
               "views_version": views["version"]}
    predictions = {"labels": data.y_test, "predictive_probs": predictive, "mean_weight_probs": mean_probs,
                   "sample_probs": sample_probs.half()}
    return metrics, predictions


def final_state(run) -> dict:
    """Everything but the weights that a re-evaluation of the finished run needs (plain data)."""
    return {"config": run.cfg.to_dict(), "epoch": run.epoch, "step": run.step, "train_flops": run.train_flops,
            "wall_time": run.wall_time, "history": run.history, "method": run.method.state_dict(),
            "posterior": run.method.posterior_state()}


def restore_final(run, state_dict: dict, state: dict) -> None:
    """Load a finished run's final posterior and training state into a freshly built ``run``."""
    run.model.load_state_dict(state_dict)
    run.method.load_state_dict(state["method"])
    run.method.load_posterior_state(state.get("posterior"))
    run.epoch, run.step, run.train_flops = state["epoch"], state["step"], state["train_flops"]
    run.wall_time, run.history = state["wall_time"], state["history"]


def write_results(run, out: Path, metrics: dict, predictions: dict, kept_final_model: Path | None = None) -> dict:
    """Write the result files (``kept_final_model``: a re-evaluation keeps the final model it started from)."""
    cfg, method = run.cfg, run.method
    final = file_record(kept_final_model) if kept_final_model else save_final(out, run.model.state_dict(), final_state(run))
    (out / LEGACY_MODEL).unlink(missing_ok=True)  # a legacy run's dense model, superseded by the compact one
    files = {FINAL_MODEL: final,
             PREDICTIONS: save_torch(out / PREDICTIONS, predictions),
             SUBSPACE_RECORDS: write_json(out / SUBSPACE_RECORDS, method.records, indent=None)}
    result = {
        "method": cfg.method, "dataset": cfg.dataset, "arch": cfg.arch, "width": cfg.width, "seed": cfg.seed,
        "density": method.density(), "target_density": cfg.density if method.layers else 1.0,
        "epochs": cfg.epochs, "steps": run.step,
        "mask_updates": len(method.records),  # subspace updates (ssvi) or pruning steps (gradual_pruning) made
        **{k: metrics[k] for k in TOP_LEVEL_METRICS},
        # what a chance-level check of the accuracy needs (ssvi.report.runs.chance_p_value)
        "test_size": int(predictions["labels"].shape[0]), "num_classes": int(predictions["predictive_probs"].shape[1]),
        "mean_weight": metrics["mean_weight"],
        "temperature_scaled": metrics["temperature_scaled"],
        "curves": metrics["curves"], "views_version": metrics["views_version"],
        **method.result_info(),
        "train_flops": method.initial_train_flops() + run.train_flops,
        "train_flops_this_run": run.train_flops,
        "train_time_s": method.initial_train_time() + run.wall_time,  # with a two-stage method's source run
        "test_flops": method.ctx.profile.forward(method.densities()),
        "prediction_flops": method.prediction_flops(),
        "dense_test_flops": method.ctx.profile.dense_forward,
        "flops_unit": flops.UNIT,
        "training_products_per_layer": method.forward_products,
        "layer_densities": method.densities(),
        "eval": {"mode": "final_epoch", "num_samples": method.num_predictive_samples(),
                 "predictive": f"mean softmax of {method.num_predictive_samples()} sample(s): "
                               f"{method.posterior_kind().description}",
                 "mean_weight": "softmax with posterior-mean weights",
                 "temperature_scaled": metrics["temperature_scaled"]["rule"], "curves": CURVES_NOTE},
        "metric_variants": {**METRIC_VARIANTS, **{f"ood_{k}": v for k, v in OOD_METRIC_VARIANTS.items()}},
        "sparse_kernel": {"mode": cfg.sparse_kernel, "auto_choices": route_choices(method.layers)},
        "history": run.history,
        "config": cfg.to_dict(),
        "provenance": {**provenance(run.device), "wall_time_s": run.wall_time},
        FILES_KEY: files,
    }
    write_json(out / METRICS, result)
    return result
