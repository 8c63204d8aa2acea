"""Run flags: runs whose numbers should not be read like results. Counted in the tables, named in the verdicts.

- **at chance level**: the run's accuracy cannot be told from guessing one of its C classes at random (one-sided
  exact binomial test over its test set, p > CHANCE_P). Such a run decides nothing: a comparison with one on a side
  is "not tested" (ssvi.report.verdicts), and its OOD numbers are marked degenerate (an ensemble at chance reported
  AUROC 0.90 from max-probability differences of 1e-5).
- **not converged**: the run's test accuracy (its own history in metrics.json: the mean-weight prediction after
  each epoch) rose by more than ``claims: convergence_gain`` points (default 2) from the second-to-last epoch to
  the last: it was still improving when training stopped. Counted in the tables and named in the claims, but
  kept in them (the run's final model is its result).

    runs = flag_runs(runs, config)     # adds the boolean columns chance_level and not_converged
"""

from __future__ import annotations

import pandas as pd

CHANCE_P = 1e-3
DEFAULT_CONVERGENCE_GAIN = 2.0
CHANCE, NOT_CONVERGED = "chance_level", "not_converged"


def convergence_gain(config: dict) -> float:
    return float((config.get("claims") or {}).get("convergence_gain", DEFAULT_CONVERGENCE_GAIN))


def flag_runs(runs: pd.DataFrame, config: dict) -> pd.DataFrame:
    """``runs`` with the columns chance_level and not_converged (False where unknown)."""
    if runs.empty:
        return runs.assign(**{CHANCE: pd.Series(dtype=bool), NOT_CONVERGED: pd.Series(dtype=bool)})
    chance = runs["chance_p"].astype(float) > CHANCE_P if "chance_p" in runs else False
    gain = runs["last_epoch_gain"].astype(float) > convergence_gain(config) if "last_epoch_gain" in runs else False
    return runs.assign(**{CHANCE: chance, NOT_CONVERGED: gain})


def rule(config: dict) -> str:
    return (f"flags: 'at chance' = accuracy not above guessing one of C classes at random (one-sided exact binomial "
            f"test on the test set, p > {CHANCE_P:g}; such runs decide no comparison); 'not converged' = test "
            f"accuracy rose by more than {convergence_gain(config):g} points over the last epoch")


def flag_cell(n_chance, n_not_converged) -> str:
    parts = [f"{int(n_chance)} at chance" if n_chance else "", f"{int(n_not_converged)} not converged"
             if n_not_converged else ""]
    return ", ".join(p for p in parts if p)
