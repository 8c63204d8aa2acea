"""Loading finished runs and checking them against the grid of a workflow config.

Takes a workflow config and run directories (default: every run of the config's grid,
``workflow/scripts/grid.py``); gives
- ``load_runs``: a ``RunSet``: one row per finished run (``RUN_COLUMNS``: identity, metrics, FLOPs, train
  time, device, stale flag), the run dirs without ``metrics.json`` (an error unless ``allow_missing``) and
  the stale runs: a run whose recorded config (metrics.json ``config``) differs from the config the grid
  expects for its path (contract C-C; environment keys and the results_dir part of ``init_from``
  ignored) is an error naming the run and the keys, unless ``allow_stale``, which keeps it marked;
- ``load_evaluations``: the runs' ``ood_shift.json`` in long format, with the sets each run did not
  evaluate (``"not_evaluated"``, contract C-B, or the older ``{"missing": ...}`` entries);
- ``read_subspace``: a run's ``subspace.json`` records.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..rundir import check_finished, read_evaluation_file
from .columns import METRICS, OOD_METRICS, TEMPERATURE, VIEWS
from ..rundir import PREDICTIONS
from .recorded import run_views, stored_predictive

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "workflow" / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
import grid  # noqa: E402  (workflow/scripts/grid.py: the one place runs and paths are defined)

log = logging.getLogger("aggregate")

METRICS_FILE, SUBSPACE_FILE, EVAL_FILE = "metrics.json", "subspace.json", "ood_shift.json"
LISTED = 10  # run dirs named in a caption before "(+N more)"


class MissingRunsError(UserError):
    """Run directories without a finished ``metrics.json``; the message names them."""


class StaleRunsError(UserError):
    """Runs whose recorded config is not the one the grid expects; the message names them and the keys."""


class MissingEvalError(UserError):
    """Finished runs without ``ood_shift.json`` under ``--require-eval``; the message names them."""


class EvalFileError(UserError):
    """An ``ood_shift.json`` that cannot be read or belongs to another run; the message names it."""


def default_run_dirs(config: dict) -> list[Path]:
    root = grid.runs_root(config)
    return [root / path for path in sorted(grid.run_grid(config))]


def expected_configs(config: dict) -> dict[str, dict]:
    """Grid path -> the full run config the grid expects there (contract C-C)."""
    return {path: grid.expected_config(config, spec) for path, spec in grid.run_grid(config).items()}


def method_label(method: str, ft_epochs, options: dict | None = None) -> str:
    """The table label of a run: the method, post-hoc's fine-tuning epochs and the options of its methods entry
    (``posthoc (ft 3)``, ``dense_vi_klw (kl_factor 0.5)``, ``posthoc (ft 0, bn_reestimation false)``)."""
    parts = [f"ft {int(ft_epochs)}"] if method == "posthoc" else []
    parts += [f"{key} {grid.option_text(value)}" for key, value in (options or {}).items()]
    return f"{method} ({', '.join(parts)})" if parts else method


def infer_variant(method: str, cfg: dict, defaults: dict) -> str:
    """The grid's variant of a run dir outside the standard layout, from its run config."""
    if method == "posthoc":
        return f"ft{cfg.get('epochs')}"
    if cfg.get("criterion", defaults["criterion"]) != defaults["criterion"]:
        return f"crit-{cfg['criterion']}"
    sigma, kl = cfg.get("sigma_init", defaults["sigma_init"]), cfg.get("kl_scale", defaults["kl_scale"])
    if sigma != defaults["sigma_init"] or kl != defaults["kl_scale"]:
        return f"sigma{sigma:g}-kl{kl:g}"
    delta_t, alpha = cfg.get("delta_t", defaults["delta_t"]), cfg.get("alpha", defaults["alpha"])
    if delta_t != defaults["delta_t"] or alpha != defaults["alpha"]:
        return f"dt{delta_t}-a{alpha:g}"
    return grid.DEFAULT


def number(value) -> float:
    return float("nan") if value is None else float(value)


def view_values(views: dict | None) -> dict:
    """The runs table's columns of a run's uncertainty views (NaN when not available)."""
    views = views or {}
    metrics, scaled = views.get("metrics", {}), views.get("temperature_scaled", {})
    temperatures = scaled.get("temperatures") or []
    return {**{k: number(metrics.get(k)) for k in VIEWS},
            **{f"t_{k}": number(scaled.get(k)) for k in ("nll", "ece", "ace", "brier")},
            TEMPERATURE: sum(temperatures) / len(temperatures) if temperatures else float("nan"),
            "t_unfitted": int(scaled.get("unfitted", 0)), "t_at_limit": bool(scaled.get("at_limit", False))}


def chance_p_value(acc: float, test_size, num_classes) -> float:
    """One-sided exact binomial p-value of the accuracy against guessing one of ``num_classes`` classes at random
    (large: the run cannot be told from chance); NaN when the test size or the class count is unknown."""
    if not test_size or not num_classes or acc != acc:
        return float("nan")
    from scipy.stats import binom
    return float(binom.sf(round(acc * test_size) - 1, int(test_size), 1.0 / int(num_classes)))


def last_epoch_gain(history) -> float:
    """Test accuracy of the last epoch minus that of the one before, in points (NaN with fewer than 2 epochs)."""
    accs = [h.get("test_acc") for h in history or [] if isinstance(h, dict) and h.get("test_acc") is not None]
    return 100 * (accs[-1] - accs[-2]) if len(accs) >= 2 else float("nan")


def test_size_of(m: dict, views: dict | None):
    """The test set's size: recorded, or the reliability curve's counts of a run made before it was recorded."""
    counts = ((views or {}).get("curves") or {}).get("reliability", {}).get("count")
    return m.get("test_size") or (int(sum(counts)) if counts else None)


def run_row(run_dir: Path, m: dict, defaults: dict, views: dict | None = None, views_source: str = "") -> dict:
    """One row of the runs table from a run's metrics.json (and its uncertainty views)."""
    cfg = m.get("config", {})
    method = m["method"]
    ft = cfg.get("epochs", m.get("epochs")) if method == "posthoc" else None
    parsed = grid.RUN_PATH.search(Path(run_dir).as_posix())
    mean_weight, provenance = m.get("mean_weight", {}), m.get("provenance", {})
    variant = parsed["variant"] if parsed else infer_variant(method, cfg, defaults)
    return {
        "run_dir": str(run_dir), "dataset": m["dataset"], "arch": m["arch"], "method": method,
        "label": method_label(method, ft, grid.path_options(variant, cfg.get("extra") or {})),
        "variant": variant,
        "density": float(parsed["density"]) if parsed else number(m.get("target_density", 1.0)),
        "seed": int(m["seed"]),
        **{k: cfg.get(k, defaults[k]) for k in ("criterion", "delta_t")},
        **{k: number(cfg.get(k, defaults[k])) for k in ("sigma_init", "kl_scale", "alpha")},
        "ft_epochs": number(ft), "epochs": m.get("epochs"), "actual_density": number(m.get("density")),
        "acc_pct": 100 * number(m.get("acc")), **{k: number(m.get(k)) for k in METRICS[1:]},
        "mw_acc_pct": 100 * number(mean_weight.get("acc")),
        **{f"mw_{k}": number(mean_weight.get(k)) for k in METRICS[1:]},
        **view_values(views), "views_source": views_source, "posterior": m.get("posterior", "gaussian"),
        "ensemble_method": "", "ensemble_size": 0,
        "train_flops": number(m.get("train_flops")), "train_flops_this_run": number(m.get("train_flops_this_run")),
        "test_flops": number(m.get("test_flops")), "dense_test_flops": number(m.get("dense_test_flops")),
        # with a two-stage run's source (recorded since the Laplace baseline; older post-hoc runs: added below)
        "train_time_s": number(m.get("train_time_s", provenance.get("wall_time_s"))),
        "train_time_this_run_s": number(provenance.get("wall_time_s")),
        "device": provenance.get("device") or "unknown",
        "num_samples": m.get("eval", {}).get("num_samples"), "width": m.get("width"),
        "stale": False, "stale_reason": "",
        "run_name": grid.grid_path(run_dir) or str(run_dir), "main_grid": True,
        "test_size": test_size_of(m, views), "num_classes": m.get("num_classes"),
        "chance_p": chance_p_value(number(m.get("acc")), test_size_of(m, views), m.get("num_classes")),
        "last_epoch_gain": last_epoch_gain(m.get("history")),
    }


RUN_COLUMNS = list(run_row(Path("x"), {"method": "ssvi", "dataset": "", "arch": "", "seed": 0},
                           {"criterion": "", "sigma_init": 0.0, "kl_scale": 0.0, "delta_t": 0, "alpha": 0.0}))


def add_posthoc_source_time(runs: pd.DataFrame) -> pd.DataFrame:
    """Post-hoc train time = its own + its dense VI source's (like its train FLOPs); NaN without the source. Runs
    whose metrics.json records ``train_time_s`` with the source's time already have it."""
    sources = runs[(runs["method"] == "dense_vi") & (runs["variant"] == grid.DEFAULT)]
    source_time = {(r.dataset, r.arch, r.seed): r.train_time_this_run_s for r in sources.itertuples()}
    posthoc = (runs["method"] == "posthoc") & (runs["train_time_s"] == runs["train_time_this_run_s"])
    runs.loc[posthoc, "train_time_s"] = [
        t + source_time.get((d, a, s), float("nan")) for t, d, a, s in
        zip(runs.loc[posthoc, "train_time_this_run_s"], runs.loc[posthoc, "dataset"], runs.loc[posthoc, "arch"],
            runs.loc[posthoc, "seed"])]
    return runs


def listing(items: list, limit: int = LISTED) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


@dataclass
class RunSet:
    runs: pd.DataFrame                                   # RUN_COLUMNS, one row per finished run
    missing: list[str] = field(default_factory=list)     # run dirs without metrics.json (--allow-missing)
    stale: dict[str, str] = field(default_factory=dict)  # run dir -> why it is stale (--allow-stale)
    curves: dict[str, dict] = field(default_factory=dict)  # run dir -> its curves (reliability, risk-coverage)
    metrics: dict[str, dict] = field(default_factory=dict)  # run dir -> its metrics.json (ensembles read it)

    def notes(self) -> str:
        """What every caption says about runs left out or included against the grid ('' when nothing)."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} run(s) of the grid missing (no {METRICS_FILE}; aggregated with "
                         f"--allow-missing): {listing([grid.grid_path(d) or d for d in self.missing])}")
        if self.stale:
            parts.append(f"{len(self.stale)} stale run(s) included (--allow-stale; counted in column n_stale): "
                         f"{listing([grid.grid_path(d) or d for d in self.stale])}")
        return ". ".join(parts)


def load_runs(config: dict, run_dirs=None, allow_missing: bool = False, allow_stale: bool = False) -> RunSet:
    """The finished runs among ``run_dirs`` (default: the config's grid), checked against the grid."""
    defaults = grid.recipe_defaults(config)
    dirs = list(dict.fromkeys(Path(d) for d in (default_run_dirs(config) if run_dirs is None else run_dirs)))
    missing = [d for d in dirs if not (d / METRICS_FILE).is_file()]
    if missing and not allow_missing:
        raise MissingRunsError(f"{len(missing)} run(s) have no {METRICS_FILE} (unfinished or not run; pass "
                               f"--allow-missing to aggregate the others):\n  " + "\n  ".join(map(str, missing)))
    for d in missing:
        log.warning("skipping unfinished run %s (no %s)", d, METRICS_FILE)
    expected = expected_configs(config)
    main_grid = grid.main_paths(config)
    rows, stale, curves, recorded = [], {}, {}, {}
    for d in dirs:
        if d in missing:
            continue
        metrics = check_finished(d)  # every recorded result file whole (sizes), or one error naming the file
        views, source = run_views(d, metrics)
        row = run_row(d, metrics, defaults, views, source)
        if row["num_classes"] is None and (d / PREDICTIONS).is_file():  # a run made before it was recorded
            row["num_classes"] = int(stored_predictive(d, metrics)[0].shape[1])
            row["chance_p"] = chance_p_value(row["acc_pct"] / 100, row["test_size"], row["num_classes"])
        # main cells use the main seeds only: a run that is only an ensemble member's extra seed serves its ensemble
        row["main_grid"] = grid.grid_path(d) is None or grid.grid_path(d) in main_grid
        curves[str(d)], recorded[str(d)] = (views or {}).get("curves"), metrics
        reason = grid.staleness(d, metrics.get("config", {}), expected)
        if reason:
            stale[str(d)] = reason
            row.update(stale=True, stale_reason=reason)
        rows.append(row)
    if stale and not allow_stale:
        raise StaleRunsError(
            f"{len(stale)} run(s) were trained with another run config than this workflow config gives their "
            f"path (re-train them with `snakemake`, whose train rule restarts runs whose config changed, or pass "
            f"--allow-stale to include them, marked in the tables):\n  "
            + "\n  ".join(f"{d}: {why}" for d, why in stale.items()))
    for d, why in stale.items():
        log.warning("stale run included (--allow-stale): %s %s", d, why)
    runs = add_posthoc_source_time(pd.DataFrame(rows, columns=RUN_COLUMNS))
    return RunSet(runs, [str(d) for d in missing], stale, curves, recorded)


EVAL_OOD_COLUMNS = ["run_dir", "ood_set", "score", *OOD_METRICS]
EVAL_SHIFT_COLUMNS = ["run_dir", "corruption", "severity", *METRICS]


@dataclass
class Evaluations:
    """The runs' ood_shift.json files in long format, keyed by run_dir (the runs table's column)."""
    ood: pd.DataFrame                                                 # EVAL_OOD_COLUMNS
    shift: pd.DataFrame                                               # EVAL_SHIFT_COLUMNS
    ood_not_evaluated: dict[str, list[str]] = field(default_factory=dict)  # OOD set -> runs that skipped it
    shift_not_evaluated: list[str] = field(default_factory=list)      # runs whose shift set was skipped
    shift_sources: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls) -> "Evaluations":
        return cls(pd.DataFrame(columns=EVAL_OOD_COLUMNS), pd.DataFrame(columns=EVAL_SHIFT_COLUMNS))


def read_evaluation(run: pd.Series) -> dict:
    """A run's ood_shift.json, checked to belong to it."""
    path = Path(run["run_dir"]) / EVAL_FILE
    data = read_evaluation_file(Path(run["run_dir"]))  # a damaged file: one error naming it and the fix
    other = {k: (data.get(k), run[k]) for k in ("method", "dataset", "arch", "seed") if k in data and data[k] != run[k]}
    if other:
        diffs = ", ".join(f"{k}: {a!r} there, {b!r} in {METRICS_FILE}" for k, (a, b) in other.items())
        raise EvalFileError(f"{path} belongs to another run ({diffs}); re-run ssvi evaluate")
    return data


def load_evaluations(runs: pd.DataFrame, require: bool = False) -> Evaluations:
    """Read ``ood_shift.json`` of every run in ``runs`` that has one. ``require``: a run without it raises
    MissingEvalError naming every such run. Sets listed in ``not_evaluated`` (or recorded as
    {"missing": ...}) give no values and are recorded per run."""
    run_dirs = list(runs["run_dir"]) if not runs.empty else []
    missing = [d for d in run_dirs if not (Path(d) / EVAL_FILE).is_file()]
    if missing and require:
        raise MissingEvalError(f"{len(missing)} finished run(s) have no {EVAL_FILE} (run `python -m ssvi evaluate "
                               f"--run RUN_DIR`, or drop --require-eval):\n  " + "\n  ".join(missing))
    if missing:
        log.info("%d run(s) without %s: no OOD / shift values for them", len(missing), EVAL_FILE)
    evals, ood, shift = Evaluations.empty(), [], []
    for _, run in runs.iterrows():
        if run["run_dir"] in missing:
            continue
        data = read_evaluation(run)
        recorded_ood = data.get("ood") or {}
        skipped = list(data.get("not_evaluated") or [])
        skipped += [s for s, scores in recorded_ood.items() if "missing" in scores and s not in skipped]
        for name in skipped:
            if name in recorded_ood or name in data.get("ood_sets", []):
                evals.ood_not_evaluated.setdefault(name, []).append(run["run_dir"])
            else:  # the dataset's shift set (cifar10c, digits_corrupted)
                evals.shift_not_evaluated.append(run["run_dir"])
        for ood_set, scores in recorded_ood.items():
            if ood_set not in skipped:
                ood += [{"run_dir": run["run_dir"], "ood_set": ood_set, "score": score,
                         **{m: number(values.get(m, values.get("aupr") if m == "aupr_in" else None))
                            for m in OOD_METRICS}} for score, values in scores.items()]
        shift += [{"run_dir": run["run_dir"], "corruption": r["corruption"], "severity": int(r["severity"]),
                   "acc_pct": 100 * number(r.get("acc")), **{m: number(r.get(m)) for m in METRICS[1:]}}
                  for r in data.get("shift") or []]
        if data.get("shift") and data.get("shift_source") and data["shift_source"] not in evals.shift_sources:
            evals.shift_sources.append(data["shift_source"])
    for name, dirs in [*evals.ood_not_evaluated.items(), ("the shift set", evals.shift_not_evaluated)]:
        if dirs:
            log.warning("%s was not evaluated by ssvi evaluate in %d run(s), e.g. %s", name, len(dirs), dirs[0])
    evals.ood = pd.DataFrame(ood, columns=EVAL_OOD_COLUMNS)
    evals.shift = pd.DataFrame(shift, columns=EVAL_SHIFT_COLUMNS)
    return evals


def read_subspace(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / SUBSPACE_FILE
    if not path.is_file():
        log.warning("%s has no %s; no subspace records", run_dir, SUBSPACE_FILE)
        return []
    return json.loads(path.read_text())
