"""Out-of-distribution detection and distribution-shift evaluation of a finished run (no retraining).

    python -m ssvi evaluate --run results/runs/cifar10/resnet18/ssvi/default/d0.1/seed0 [--data-dir data]

Reads the run's ``model.pt``, ``predictions.pt`` and ``metrics.json`` and writes ``ood_shift.json``:

- OOD detection: the in-distribution test set against each OOD set of :data:`OOD_SETS` (CIFAR-10/100
  vs SVHN and vs each other). Scores (higher = more in-distribution): maximum softmax probability,
  negative predictive entropy and negative mutual information (the epistemic part, from the K posterior
  samples); metrics AUROC, AUPR (in-distribution positive) and FPR at 95% TPR (:func:`ssvi.metrics.ood_metrics`).
  The same K weight samples as the in-distribution evaluation are used (same seeded generator).
- Distribution shift: accuracy, NLL, ECE and Brier of the posterior predictive under corruptions at
  severities 1-5: CIFAR-10-C's standard ``.npy`` files for ``cifar10``; for the embedded ``digits``
  default, corruptions generated on the fly (:data:`DIGITS_CORRUPTIONS`, deterministic per seed).

Embedded default, stated plainly: digits has no standard OOD set, so its OOD set is ``natural_patches``:
grey-scale patches cut at seeded random places from the two photographs that ship with scikit-learn
(``load_sample_images``), resized to the digits' size. It is a far-OOD check, easier than SVHN vs CIFAR.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import CIFAR10C_CORRUPTIONS, DataMissingError, Dataset, load_cifar10c, load_dataset
from .evaluate import posterior_generator, posterior_samples
from .metrics import classification_metrics, ood_metrics, uncertainty_scores
from .models import create_model
from .provenance import provenance
from .trainer import FINAL_MODEL, METRICS, PREDICTIONS, atomic_write_text, resolve_device

log = logging.getLogger("ssvi")

OOD_SETS = {"cifar10": ("svhn", "cifar100"), "cifar100": ("svhn", "cifar10"), "svhn": ("cifar10",),
            "digits": ("natural_patches",)}
SHIFT_SOURCE = {"cifar10": "CIFAR-10-C (standard .npy files)", "digits": "digits corrupted on the fly"}
DIGITS_CORRUPTIONS = ("gaussian_noise", "impulse_noise", "gaussian_blur", "contrast", "pixelate")
SEVERITIES = (1, 2, 3, 4, 5)
RESULT_FILE = "ood_shift.json"
PATCH_SIZE = 32  # pixels cut from the photographs before resizing


# --------------------------------------------------------------------------------------------
# OOD inputs
# --------------------------------------------------------------------------------------------

def natural_patches(count: int, image_size: int, seed: int) -> torch.Tensor:
    """``count`` grey-scale photo patches in [0, 1], 1 x image_size x image_size, at seeded places."""
    from sklearn.datasets import load_sample_images
    photos = [torch.tensor(img).float().mean(-1) / 255.0 for img in load_sample_images().images]
    g = torch.Generator().manual_seed(seed)
    patches = []
    for i in range(count):
        photo = photos[i % len(photos)]
        top = int(torch.randint(0, photo.shape[0] - PATCH_SIZE + 1, (1,), generator=g))
        left = int(torch.randint(0, photo.shape[1] - PATCH_SIZE + 1, (1,), generator=g))
        patches.append(photo[top:top + PATCH_SIZE, left:left + PATCH_SIZE])
    stacked = torch.stack(patches).unsqueeze(1)
    return F.interpolate(stacked, size=(image_size, image_size), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def ood_inputs(name: str, data: Dataset, data_dir: str, seed: int) -> torch.Tensor:
    if name == "natural_patches":
        return natural_patches(len(data.y_test), data.image_size, seed)
    ood = load_dataset(name, data_dir, image_size=data.image_size)
    if ood.in_channels != data.in_channels:
        raise ValueError(f"OOD set {name} has {ood.in_channels} channels, {data.name} has {data.in_channels}")
    return ood.x_test


# --------------------------------------------------------------------------------------------
# corruptions of the embedded default (deterministic per generator)
# --------------------------------------------------------------------------------------------

def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2 * sigma)))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-grid**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return kernel[:, None] * kernel[None, :]


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Corrupt images in [0, 1] (N x C x H x W); severity 1 (mild) .. 5 (strong)."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    s = severity - 1
    if name == "gaussian_noise":
        out = x + (0.08, 0.12, 0.18, 0.26, 0.38)[s] * torch.randn(x.shape, generator=generator)
    elif name == "impulse_noise":
        amount = (0.03, 0.06, 0.09, 0.17, 0.27)[s]
        draw = torch.rand(x.shape, generator=generator)
        out = torch.where(draw < amount / 2, 0.0, torch.where(draw > 1 - amount / 2, 1.0, x))
    elif name == "gaussian_blur":
        kernel = _gaussian_kernel((0.4, 0.6, 0.8, 1.0, 1.4)[s]).to(x)
        weight = kernel.expand(x.shape[1], 1, *kernel.shape)
        out = F.conv2d(F.pad(x, [kernel.shape[0] // 2] * 4, mode="replicate"), weight, groups=x.shape[1])
    elif name == "contrast":
        means = x.mean(dim=(1, 2, 3), keepdim=True)
        out = (x - means) * (0.4, 0.3, 0.2, 0.1, 0.05)[s] + means
    elif name == "pixelate":
        size = x.shape[-1]
        small = max(1, int(round(size * (0.8, 0.7, 0.6, 0.5, 0.4)[s])))
        out = F.interpolate(F.interpolate(x, size=(small, small), mode="area"), size=(size, size), mode="nearest")
    else:
        raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(DIGITS_CORRUPTIONS)}")
    return out.clamp(0, 1)


def shifted_sets(data: Dataset, data_dir: str, seed: int):
    """Yield (corruption, x, y, severities) per corruption, the five severities stacked in order (one
    forward pass per weight sample covers them all); nothing for datasets without a shift set."""
    if data.name == "cifar10":
        for corruption in CIFAR10C_CORRUPTIONS:
            blocks = [load_cifar10c(data_dir, corruption, severity) for severity in SEVERITIES]
            x = torch.cat([b[0] for b in blocks])
            if x.shape[-1] != data.image_size:
                x = F.interpolate(x, size=(data.image_size,) * 2, mode="bilinear", antialias=True)
            yield corruption, x, torch.cat([b[1] for b in blocks]), [len(b[1]) for b in blocks]
    elif data.name == "digits":
        for i, corruption in enumerate(DIGITS_CORRUPTIONS):
            x = torch.cat([corrupt(data.x_test, corruption, severity,
                                   torch.Generator().manual_seed(seed * 1000 + i * 10 + severity))
                           for severity in SEVERITIES])
            yield corruption, x, data.y_test.repeat(len(SEVERITIES)), [len(data.y_test)] * len(SEVERITIES)


# --------------------------------------------------------------------------------------------
# evaluation of a finished run
# --------------------------------------------------------------------------------------------

def load_finished_run(run_dir: Path, data_dir: str | None, device: torch.device):
    metrics = json.loads((run_dir / METRICS).read_text())
    cfg = metrics["config"]
    data = load_dataset(cfg["dataset"], data_dir or cfg["data_dir"], image_size=cfg["image_size"])
    model = create_model(cfg["arch"], data.num_classes, cfg["width"], data.in_channels, bayesian=True)
    model.load_state_dict(torch.load(run_dir / FINAL_MODEL, map_location="cpu", weights_only=False)["model"])
    return metrics, data, model.to(device)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, device: str = "auto") -> dict:
    run_dir = Path(run_dir)
    torch_device = resolve_device(device)
    metrics, data, model = load_finished_run(run_dir, data_dir, torch_device)
    cfg = metrics["config"]
    source_dir = data_dir or cfg["data_dir"]
    k, seed = cfg["num_samples"], cfg["seed"]

    def samples(x: torch.Tensor) -> torch.Tensor:
        dummy = torch.zeros(len(x), dtype=torch.long)
        return posterior_samples(model, x, dummy, mean=data.mean, std=data.std, num_samples=k,
                                 generator=posterior_generator(seed), batch_size=cfg["eval_batch_size"],
                                 device=torch_device)

    in_scores = uncertainty_scores(torch.load(run_dir / PREDICTIONS)["sample_probs"].float())
    ood = {}
    for name in OOD_SETS.get(data.name, ()):
        try:
            out_scores = uncertainty_scores(samples(ood_inputs(name, data, source_dir, seed)))
        except DataMissingError as error:
            log.warning("OOD set %s skipped: %s", name, error)
            ood[name] = {"missing": str(error)}
            continue
        ood[name] = {score: ood_metrics(in_scores[score], out_scores[score]) for score in in_scores}
        log.info("OOD %s vs %s: AUROC %s", data.name, name,
                 {s: round(v["auroc"], 4) for s, v in ood[name].items()})
    shift = []
    try:
        for corruption, x, y, sizes in shifted_sets(data, source_dir, seed):
            predictive = samples(x).mean(0)
            for severity, probs, labels in zip(SEVERITIES, predictive.split(sizes), y.split(sizes)):
                shift.append({"corruption": corruption, "severity": severity,
                              **classification_metrics(probs, labels)})
    except DataMissingError as error:
        log.warning("distribution shift skipped: %s", error)
        shift = []
    result = {
        "run": str(run_dir), "method": metrics["method"], "dataset": metrics["dataset"], "arch": metrics["arch"],
        "density": metrics["density"], "seed": seed, "num_samples": k,
        "ood_sets": list(OOD_SETS.get(data.name, ())), "ood": ood,
        "ood_scores": {"max_prob": "maximum softmax probability of the predictive",
                       "neg_entropy": "negative predictive entropy",
                       "neg_mutual_info": "negative mutual information between prediction and weights (epistemic)"},
        "shift_source": SHIFT_SOURCE.get(data.name), "shift": shift,
        "shift_by_severity": _by_severity(shift), "metric_variants": metrics["metric_variants"],
        "provenance": provenance(torch_device),
    }
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(result, indent=1))
    return result


def _by_severity(rows: list[dict]) -> list[dict]:
    """Mean over corruptions of each metric, per severity."""
    summary = []
    for severity in SEVERITIES:
        at = [r for r in rows if r["severity"] == severity]
        if at:
            keys = [k for k in at[0] if k not in ("corruption", "severity")]
            summary.append({"severity": severity, **{k: sum(r[k] for r in at) / len(at) for k in keys}})
    return summary
