"""The uncertainty views of each finished run: as its metrics.json records them, or, for runs made before a
view was recorded, recomputed from its stored ``predictions.pt`` (checked against its recorded SHA-256 when
there is one). A run with neither says so ("not available"); nothing is guessed.

    views, source = run_views(run_dir, metrics)   # source: "recorded", "recomputed ..." or "not available"
    probs, labels = stored_predictive(run_dir, metrics)   # the predictive probabilities (ensembles use them)
"""

from __future__ import annotations

import io
from pathlib import Path

from ..rundir import FILES_KEY, PREDICTIONS, Damage, DamagedRunError, repair_advice
from ..files import read_verified

RECORDED, RECOMPUTED, NOT_AVAILABLE_SOURCE = "recorded", f"recomputed from {PREDICTIONS}", "not available"
RECORDED_OLDER = "recorded by older rules (no predictions.pt to recompute them)"


def load_verified_torch(run_dir: Path, name: str, metrics: dict | None):
    """``torch.load`` of a run's file after checking it against its record (if the run has one)."""
    import torch
    path = Path(run_dir) / name
    record = ((metrics or {}).get(FILES_KEY) or {}).get(name)
    try:
        data = read_verified(path, record)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except (ValueError, RuntimeError, EOFError, OSError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise DamagedRunError(Damage(path, reason, repair_advice(Path(run_dir), name))) from None


def stored_predictive(run_dir: Path, metrics: dict):
    """(predictive probabilities N x C, labels) of a finished run, from its verified predictions.pt."""
    predictions = load_verified_torch(run_dir, PREDICTIONS, metrics)
    return predictions["predictive_probs"], predictions["labels"]


def run_views(run_dir: Path, metrics: dict) -> tuple[dict | None, str]:
    """({"metrics": {ace, aurc, augrc}, "temperature_scaled": {...}, "curves": {...}}, source). Views recorded by an
    older version of their rules (ssvi.views.VIEWS_VERSION) are recomputed from predictions.pt where it exists."""
    from ..views import VIEWS_VERSION, predictive_views
    recorded = all(k in metrics for k in ("ace", "aurc", "augrc", "temperature_scaled", "curves"))
    current = metrics.get("views_version") == VIEWS_VERSION
    has_predictions = (Path(run_dir) / PREDICTIONS).is_file()
    if recorded and (current or not has_predictions):
        return {"metrics": {k: metrics[k] for k in ("ace", "aurc", "augrc")},
                "temperature_scaled": metrics["temperature_scaled"], "curves": metrics["curves"]}, \
            RECORDED if current else RECORDED_OLDER
    if not has_predictions:
        return None, NOT_AVAILABLE_SOURCE
    return predictive_views(*stored_predictive(run_dir, metrics)), RECOMPUTED
