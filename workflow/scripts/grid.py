"""The experiment grid: one function turns a workflow config into the set of runs (the one place paths
and grids are defined). Used by the Snakefile, the aggregation script and the tests.

A run lives in ``<results_dir>/runs/<dataset>/<arch>/<method>/<variant>/d<density>/seed<seed>/``, where
``variant`` is ``default`` (the recipe of ``config['run']``), ``crit-<criterion>`` (criteria ablation),
``sigma<s>-kl<k>`` (hyperparameter robustness) or ``ft<epochs>`` (post-hoc fine-tuning epochs). A run
shared by several studies (e.g. the default SSVI run is also the default criterion of the ablation)
appears once.

    python workflow/scripts/grid.py config/paper.yaml      # list the runs of a config
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT = "default"


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    arch: str
    method: str
    variant: str
    density: float
    seed: int
    overrides: dict = field(default_factory=dict, compare=False, hash=False)  # run-config keys of the variant

    @property
    def path(self) -> str:
        return f"{self.dataset}/{self.arch}/{self.method}/{self.variant}/d{self.density:g}/seed{self.seed}"


def recipe_defaults(config: dict) -> dict:
    """Run-config values every run starts from: ssvi.config.RunConfig defaults + config['run']."""
    from ssvi.config import RunConfig
    return {**RunConfig().to_dict(), **config.get("run", {})}


def runs_root(config: dict) -> Path:
    return Path(config.get("results_dir", "results")) / "runs"


def dense_source(config: dict, dataset: str, arch: str, seed: int) -> RunSpec:
    """The dense_vi run a post-hoc run compresses."""
    return RunSpec(dataset, arch, "dense_vi", DEFAULT, 1.0, seed)


def _runs_of(config: dict, dataset: str, arch: str, method: str, density: float, seed: int,
             variant: str = DEFAULT, overrides: dict | None = None) -> list[RunSpec]:
    if method == "dense_vi":
        density = 1.0
    if method != "posthoc":
        return [RunSpec(dataset, arch, method, variant, density, seed, overrides or {})]
    return [RunSpec(dataset, arch, method, f"ft{epochs}", density, seed, {**(overrides or {}), "epochs": epochs})
            for epochs in config.get("posthoc_finetune_epochs", [0])]


def run_grid(config: dict) -> dict[str, RunSpec]:
    """Every run of the config, keyed by its relative path (deduplicated, posthoc sources included)."""
    defaults = recipe_defaults(config)
    runs: list[RunSpec] = []
    for dataset in config["datasets"]:
        for arch in config["archs"]:
            for method, densities in config["methods"].items():
                for density in densities:
                    for seed in config["seeds"]:
                        runs += _runs_of(config, dataset, arch, method, density, seed)
    ablation = config.get("criteria_ablation")
    if ablation:
        for criterion in ablation["criteria"]:
            variant = DEFAULT if criterion == defaults["criterion"] else f"crit-{criterion}"
            for seed in config["seeds"]:
                runs += _runs_of(config, ablation["dataset"], ablation["arch"], "ssvi", ablation["density"], seed,
                                 variant, {"criterion": criterion})
    robustness = config.get("robustness")
    if robustness:
        for sigma in robustness["sigma_init"]:
            for kl in robustness["kl_scale"]:
                is_default = sigma == defaults["sigma_init"] and kl == defaults["kl_scale"]
                variant = DEFAULT if is_default else f"sigma{sigma:g}-kl{kl:g}"
                for method in robustness["methods"]:
                    for seed in config["seeds"]:
                        runs += _runs_of(config, robustness["dataset"], robustness["arch"], method,
                                         robustness["density"], seed, variant, {"sigma_init": sigma, "kl_scale": kl})
    runs += [dense_source(config, r.dataset, r.arch, r.seed) for r in runs if r.method == "posthoc"]
    grid: dict[str, RunSpec] = {}
    for run in runs:
        grid.setdefault(run.path, run)
    return grid


def run_overrides(config: dict, run: RunSpec) -> dict:
    """The full set of run-config values for ``python -m ssvi train`` (excluding the data directory)."""
    values = {**config.get("run", {}), "method": run.method, "dataset": run.dataset, "arch": run.arch,
              "density": run.density, "seed": run.seed, **run.overrides}
    if run.method == "posthoc":
        source = dense_source(config, run.dataset, run.arch, run.seed)
        values["init_from"] = str(runs_root(config) / source.path)
    return values


def main(argv: list[str]) -> int:
    config = yaml.safe_load(Path(argv[0]).read_text())
    for path in sorted(run_grid(config)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
