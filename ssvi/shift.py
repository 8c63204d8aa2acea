"""Out-of-distribution detection and distribution-shift evaluation of a finished run (no retraining).

    python -m ssvi evaluate --run results/runs/cifar10/resnet18/ssvi/default/d0.1/seed0 [--data-dir data] \
        [--skip svhn --skip cifar10c] [--keep-probs]

Reads the run's final model and ``metrics.json`` (checked first: a damaged file is one error naming it) and
writes ``ood_shift.json``, holding the run's lock and computing on the run's ``threads``:

- OOD detection: the in-distribution test set against each OOD set of :data:`OOD_SETS` (CIFAR-10/100
  vs SVHN and vs each other). Scores (higher = more in-distribution): maximum softmax probability,
  negative predictive entropy and negative mutual information (the epistemic part, from the K posterior
  samples; a point-estimate method has none, so it gets the first two); metrics AUROC, AUPR both ways
  (in-distribution positive: ``aupr_in``; OOD positive: ``aupr_out``) and FPR at 95% TPR
  (:func:`ssvi.metrics.ood_metrics`). Both sides are computed here, from fp32 probabilities of the same K
  weight samples (the seeded generator of the trainer's evaluation). ``predictions.pt`` is not used: it
  stores the samples in fp16, whose rounding alone turned a chance-level run's max-prob AUROC from 0.71
  into 1.0; recomputing costs one pass over the test set per sample, less than any OOD set.
- Distribution shift: accuracy, NLL, ECE and Brier of the predictive under corruptions at severities 1-5
  (:data:`SHIFT_SETS`): CIFAR-10-C's standard ``.npy`` files for ``cifar10``; for the embedded ``digits``
  default, corruptions generated on the fly (:data:`DIGITS_CORRUPTIONS`, deterministic per seed).
- With ``keep_probs`` (``--keep-probs``; the workflow asks it of ensemble members) also ``eval_probs.pt``,
  recorded in ``ood_shift.json``'s ``files``: per set the predictive probabilities (fp32) and, for the test
  and OOD sets, each input's mean entropy over the samples, from which the report layer scores ensembles.

Every set of :func:`evaluation_sets` is evaluated, or the command fails (exit 2, no ``ood_shift.json``)
naming the missing files, before any forward pass. A set skipped explicitly (``--skip NAME``; workflow
config ``evaluation: {skip: [NAME]}``) is listed under ``not_evaluated`` instead. :func:`datasets_to_verify`
names what ``python -m ssvi data`` must check for a dataset.

Embedded default, stated plainly: digits has no standard OOD set, so its OOD set is ``natural_patches``:
grey-scale patches cut at seeded random places from the two photographs that ship with scikit-learn
(``load_sample_images``), resized to the digits' size. It is a far-OOD check, easier than SVHN vs CIFAR.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import (CIFAR10C, CIFAR10C_CORRUPTIONS, DataMissingError, Dataset, describe_missing, load_cifar10c,
                   load_dataset, sample_photos)
from .errors import Interrupted, Terminated, UserError, signal_of
from .config import RunConfig
from .files import DiskFullError, save_torch, write_json
from .methods import create_method
from .metrics import OOD_METRIC_VARIANTS, classification_metrics, expected_entropy, ood_metrics, uncertainty_scores
from .models import create_model
from .provenance import provenance
from .rundir import EVAL_PROBS, EVALUATION, FILES_KEY, METRICS, check_finished, load_final, run_directory_lock
from .trainer import resolve_device, set_threads

log = logging.getLogger("ssvi")

NATURAL_PATCHES, DIGITS_CORRUPTED = "natural_patches", "digits_corrupted"  # generated here: no files needed
OOD_SETS = {"cifar10": ("svhn", "cifar100"), "cifar100": ("svhn", "cifar10"), "svhn": ("cifar10",),
            "digits": (NATURAL_PATCHES,)}
SHIFT_SETS = {"cifar10": CIFAR10C, "digits": DIGITS_CORRUPTED}
SHIFT_SOURCE = {CIFAR10C: "CIFAR-10-C (standard .npy files)", DIGITS_CORRUPTED: "digits corrupted on the fly"}
DIGITS_CORRUPTIONS = ("gaussian_noise", "impulse_noise", "gaussian_blur", "contrast", "pixelate")
SEVERITIES = (1, 2, 3, 4, 5)
RESULT_FILE = EVALUATION
PATCH_SIZE = 32  # pixels cut from the photographs before resizing


# --------------------------------------------------------------------------------------------
# the evaluation sets of a dataset (names shared with the workflow and ``ssvi data``)
# --------------------------------------------------------------------------------------------

def evaluation_sets(dataset: str) -> list[str]:
    """The OOD sets of ``dataset``, then its shift set, if any."""
    return [*OOD_SETS.get(dataset, ()), *([SHIFT_SETS[dataset]] if dataset in SHIFT_SETS else [])]


def check_skip(skip) -> None:
    """UserError for a name in ``skip`` that is no dataset's evaluation set (one list serves every dataset)."""
    known = sorted({name for dataset in (*OOD_SETS, *SHIFT_SETS) for name in evaluation_sets(dataset)})
    unknown = sorted(set(skip) - set(known))
    if unknown:
        raise UserError(f"cannot skip {', '.join(map(repr, unknown))}: not an evaluation set; "
                        f"known: {', '.join(known)}")


def datasets_to_verify(dataset: str, skip=()) -> list[str]:
    """``dataset`` and its evaluation sets that need files in the data directory and are not skipped: each a
    name ``python -m ssvi data --dataset NAME`` verifies."""
    check_skip(skip)
    return [dataset, *(name for name in evaluation_sets(dataset)
                       if name not in skip and name not in (NATURAL_PATCHES, DIGITS_CORRUPTED))]


def check_evaluation_data(dataset: str, data_dir: str, skip=()) -> None:
    """DataMissingError naming every missing file of the sets to evaluate, and how to fetch or skip them."""
    missing = {name: problems for name in datasets_to_verify(dataset, skip)[1:]
               if (problems := describe_missing(name, data_dir))}
    if not missing:
        return
    names = list(missing)
    details = "; ".join(f"{name}: {', '.join(problems)}" for name, problems in missing.items())
    raise DataMissingError(
        f"evaluation data of {dataset} missing: {details}; "
        f"fetch them (`python -m ssvi data --dataset NAME --data-dir {data_dir} --download`, CIFAR-10-C by hand) or "
        f"skip them explicitly: {' '.join(f'--skip {n}' for n in names)} (workflow config: "
        f"evaluation: {{skip: [{', '.join(names)}]}})")


# --------------------------------------------------------------------------------------------
# OOD inputs
# --------------------------------------------------------------------------------------------

def natural_patches(count: int, image_size: int, seed: int) -> torch.Tensor:
    """``count`` grey-scale photo patches in [0, 1], 1 x image_size x image_size, at seeded places."""
    photos = [torch.tensor(img).float().mean(-1) / 255.0 for img in sample_photos()]
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
    if name == NATURAL_PATCHES:
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
    """Yield (corruption, x, y, severities) per corruption of the dataset's shift set, the five severities
    stacked in order (one forward pass per weight sample covers them all); nothing without a shift set."""
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
    """The metrics, test data, final model and method (its posterior restored for prediction) of the finished
    run in ``run_dir``, its result files checked."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} does not exist; --run takes the directory of a finished run "
                        "(the --out of a completed `python -m ssvi train`)")
    if not (run_dir / METRICS).is_file():
        raise UserError(f"{run_dir} holds no finished run (no {METRICS}); finish it first: re-running its "
                        "`python -m ssvi train --out` command resumes it")
    metrics = check_finished(run_dir)
    cfg = metrics["config"]
    data = load_dataset(cfg["dataset"], data_dir or cfg["data_dir"], image_size=cfg["image_size"])
    model = create_model(cfg["arch"], data.num_classes, cfg["width"], data.in_channels, bayesian=True)
    state_dict, final_state = load_final(run_dir, "cpu")
    model.load_state_dict(state_dict)
    model = model.to(device)
    method = create_method(RunConfig.from_dict(cfg))
    method.restore_posterior(model, final_state, device)
    return metrics, data, model, method


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, device: str = "auto", skip=(),
                 threads: int | None = None, keep_probs: bool = False, live=None) -> dict:
    """Evaluate every set of :func:`evaluation_sets` not in ``skip`` and write ``ood_shift.json`` (and with
    ``keep_probs`` the per-set probabilities ensembles need, ``eval_probs.pt``); a missing set raises
    DataMissingError before anything is computed or written. Holds the run's lock; computes on ``threads``
    CPU threads (default: the run's own ``threads``). ``live``: the run's :class:`ssvi.trainer.Run`, just trained
    and evaluated in this process (``train --evaluate``), whose data, model, posterior and test-set samples are
    used as they are instead of being reloaded and recomputed (the same numbers: the final model reloads
    bit-identically and the samples come from the same seeded streams)."""
    run_dir = Path(run_dir)
    check_skip(skip)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} does not exist; --run takes the directory of a finished run "
                        "(the --out of a completed `python -m ssvi train`)")
    with run_directory_lock(run_dir, "ssvi evaluate", option="--run"):
        try:
            return _evaluate(run_dir, data_dir, device, skip, threads, keep_probs, live)
        except DiskFullError as error:
            raise error.advise(f"the evaluation is redone from the final model (python -m ssvi evaluate --run "
                               f"{run_dir}, or the run's train command)") from None
        except (KeyboardInterrupt, Terminated) as error:
            signum = signal_of(error)
            raise Interrupted(f"interrupted by {signal.Signals(signum).name} during the OOD / shift evaluation of "
                              f"{run_dir}; re-run to redo the evaluation from the final model (nothing of it was "
                              "written)", signum) from None


def _evaluate(run_dir: Path, data_dir, device, skip, threads, keep_probs, live=None) -> dict:
    if live is None:
        torch_device = resolve_device(device)
        metrics, data, model, method = load_finished_run(run_dir, data_dir, torch_device)
        test_samples = None
    else:
        metrics = check_finished(run_dir)
        torch_device, data, model, method, test_samples = live.device, live.data, live.model, live.method, live.test_samples
    cfg = metrics["config"]
    set_threads(threads or cfg.get("threads"))
    source_dir = data_dir or cfg["data_dir"]
    check_evaluation_data(data.name, source_dir, skip)
    seed, point = cfg["seed"], method.is_point_estimate()

    def samples(x: torch.Tensor) -> torch.Tensor:
        return method.predictive_samples(model, x, mean=data.mean, std=data.std, batch_size=cfg["eval_batch_size"],
                                         device=torch_device)

    kept: dict = {"ood": {}, "shift": {}}
    scores = [s for s in SCORES if not (point and s == "neg_mutual_info")]  # a point estimate has no epistemic part

    def scored(x: torch.Tensor, known: torch.Tensor | None = None) -> tuple[dict, dict]:  # (eval_probs.pt's part, scores)
        sample_probs = samples(x) if known is None else known
        parts = {"probs": sample_probs.mean(0), "expected_entropy": expected_entropy(sample_probs).float()}
        return parts, {name: value for name, value in uncertainty_scores(sample_probs).items() if name in scores}

    sets = evaluation_sets(data.name)
    not_evaluated = [name for name in sets if name in skip]
    log.info("evaluating OOD detection and distribution shift of %s: %s", run_dir,
             ", ".join(name for name in sets if name not in not_evaluated) or "no set (every one skipped)")
    kept["test"], in_scores = scored(data.x_test, test_samples)
    ood = {}
    for name in OOD_SETS.get(data.name, ()):
        if name in not_evaluated:
            continue
        kept["ood"][name], out_scores = scored(ood_inputs(name, data, source_dir, seed))
        ood[name] = {score: ood_metrics(in_scores[score], out_scores[score]) for score in scores}
        log.info("OOD %s vs %s: AUROC %s", data.name, name,
                 {s: round(v["auroc"], 4) for s, v in ood[name].items()})
    shift = []
    if SHIFT_SETS.get(data.name) not in not_evaluated:
        for corruption, x, y, sizes in shifted_sets(data, source_dir, seed):
            predictive = samples(x).mean(0)
            kept["shift"][corruption] = {"probs": predictive, "labels": y, "sizes": sizes}
            for severity, probs, labels in zip(SEVERITIES, predictive.split(sizes), y.split(sizes)):
                shift.append({"corruption": corruption, "severity": severity,
                              **classification_metrics(probs, labels)})
    if not_evaluated:
        log.warning("not evaluated (skipped explicitly): %s", ", ".join(not_evaluated))
    # the old ood_shift.json goes first: until the new one is written its record of eval_probs.pt would be stale
    (run_dir / RESULT_FILE).unlink(missing_ok=True)
    files = {EVAL_PROBS: save_torch(run_dir / EVAL_PROBS, kept)} if keep_probs else {}
    if not keep_probs:
        (run_dir / EVAL_PROBS).unlink(missing_ok=True)
    result = {
        "run": str(run_dir), "method": metrics["method"], "dataset": metrics["dataset"], "arch": metrics["arch"],
        "density": metrics["density"], "seed": seed, "num_samples": method.num_predictive_samples(),
        "evaluation_sets": sets, "not_evaluated": not_evaluated,
        "ood_sets": list(OOD_SETS.get(data.name, ())), "ood": ood,
        "ood_scores": {s: SCORE_DESCRIPTIONS[s] for s in scores},
        "ood_metrics": OOD_METRIC_VARIANTS,
        "ood_precision": "both sides from fp32 probabilities of the same K weight samples",
        "shift_source": SHIFT_SOURCE.get(SHIFT_SETS.get(data.name)), "shift": shift,
        "shift_by_severity": _by_severity(shift), "metric_variants": metrics["metric_variants"],
        "provenance": provenance(torch_device), FILES_KEY: files,
    }
    write_json(run_dir / RESULT_FILE, result)
    return result


SCORES = ("max_prob", "neg_entropy", "neg_mutual_info")
SCORE_DESCRIPTIONS = {"max_prob": "maximum softmax probability of the predictive",
                      "neg_entropy": "negative predictive entropy",
                      "neg_mutual_info": "negative mutual information between prediction and weights (epistemic)"}


def _by_severity(rows: list[dict]) -> list[dict]:
    """Mean over corruptions of each metric, per severity."""
    summary = []
    for severity in SEVERITIES:
        at = [r for r in rows if r["severity"] == severity]
        if at:
            keys = [k for k in at[0] if k not in ("corruption", "severity")]
            summary.append({"severity": severity, **{k: sum(r[k] for r in at) / len(at) for k in keys}})
    return summary
