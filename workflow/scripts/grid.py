"""The experiment grid: one function turns a workflow config into the set of runs (the one place paths
and grids are defined). Used by the Snakefile, the aggregation (ssvi.report) and the tests.

Ensembles (``ensembles:``) are built by the report layer from finished runs; their members are ordinary runs
of the default recipe, added here for every seed of their groups.

A run lives in ``<results_dir>/runs/<dataset>/<arch>/<method>/<variant>/d<density>/seed<seed>/``, where
``variant`` is ``default`` (the recipe of ``config['run']``), ``crit-<criterion>`` (criteria ablation),
``sigma<s>-kl<k>`` (hyperparameter robustness), ``dt<delta_t>-a<alpha>`` (subspace-schedule ablation)
or ``ft<epochs>`` (post-hoc fine-tuning epochs), followed by ``+<key><value>`` for each option a method's
entry in ``methods`` sets (its ``extra``: ``default+kl_factor0.5``). A run shared by several studies (e.g.
the default SSVI run is also the default criterion of the ablation) appears once; two different runs that
would share a path (numbers are written with 6 significant digits) are refused.

A method's entry in ``methods`` is a list of densities, a mapping ``{densities: [...], extra: {key: value or
[values]}}`` (one run per combination of the listed values), or a list mixing both.

    python workflow/scripts/grid.py config/paper.yaml      # list the runs of a config
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT = "default"
OPTION_SEPARATOR = "+"  # variant + option: default+kl_factor0.5
OPTION_WORD = re.compile(r"[A-Za-z0-9_.-]+")  # what a string option value may be (it becomes part of a path)
RUN_PATH = re.compile(r"(?P<dataset>[^/]+)/(?P<arch>[^/]+)/(?P<method>[^/]+)/(?P<variant>[^/]+)/"
                      r"d(?P<density>[^/]+)/seed(?P<seed>\d+)/?$")


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


# Methods that start from another finished run of the grid (``init_from``) and train nothing of their own
# (run-config values they always get): last-layer Laplace fits the point estimate at its density (the dense
# deterministic network at density 1). Post-hoc compression starts from dense VI (:func:`dense_source`).
LAPLACE = "laplace"
DENSE_METHODS = ("dense_vi", "deterministic", "mc_dropout", "sparse_vd")  # train dense (sparse VD ends sparse)
FITS_WITHOUT_TRAINING = {LAPLACE: {"epochs": 0}}


def source_run(config: dict, run: RunSpec) -> RunSpec | None:
    """The finished run a two-stage run starts from (its ``init_from``), or None."""
    if run.method == "posthoc":
        return dense_source(config, run.dataset, run.arch, run.seed)
    if run.method == LAPLACE:
        method = "deterministic" if run.density == 1.0 else "deterministic_sparse"
        return RunSpec(run.dataset, run.arch, method, DEFAULT, run.density, run.seed)
    return None


def option_text(value) -> str:
    """An option value as a run path writes it (6 significant digits for numbers, true / false, a plain word)."""
    from ssvi.config import ConfigError
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, str) and OPTION_WORD.fullmatch(value):
        return value
    raise ConfigError(f"option value {value!r} of a methods entry's extra cannot name a run path; use a number, "
                      "true / false or a plain word (letters, digits, _ . -)")


def with_options(variant: str, options: dict) -> str:
    """``variant`` followed by ``+<key><value>`` per option, keys sorted (``default+kl_factor0.5``)."""
    return variant + "".join(f"{OPTION_SEPARATOR}{key}{option_text(options[key])}" for key in sorted(options))


def base_variant(variant: str) -> str:
    """The variant without its options (``default+kl_factor0.5`` -> ``default``)."""
    return variant.split(OPTION_SEPARATOR, 1)[0]


def path_options(variant: str, extra: dict) -> dict:
    """The options of a run's ``extra`` (its recorded config) that its variant names, in the variant's order."""
    parts = variant.split(OPTION_SEPARATOR)[1:]
    named = {f"{key}{option_text(value)}": key for key, value in extra.items()
             if isinstance(value, (bool, int, float)) or (isinstance(value, str) and OPTION_WORD.fullmatch(value))}
    return {named[part]: extra[named[part]] for part in parts if part in named}


def method_entries(config: dict) -> list[tuple[str, list[float], dict]]:
    """(method, densities, options) for every run family of ``config['methods']``: a list of densities (no
    options), a mapping {densities, extra} (one family per combination of its extra values; a value that is no
    list is one value), or a list mixing densities and such mappings."""
    entries = []
    for method, value in config["methods"].items():
        items = value if isinstance(value, list) else [value]
        plain = [item for item in items if not isinstance(item, dict)]
        if plain:
            entries.append((method, plain, {}))
        for item in (item for item in items if isinstance(item, dict)):
            extra = item.get("extra") or {}
            values = [v if isinstance(v, list) else [v] for v in extra.values()]
            entries += [(method, list(item["densities"]), dict(zip(extra, combination)))
                        for combination in itertools.product(*values)]
    return entries


def _runs_of(config: dict, dataset: str, arch: str, method: str, density: float, seed: int,
             variant: str = DEFAULT, overrides: dict | None = None, options: dict | None = None) -> list[RunSpec]:
    """The runs of one grid cell; ``options``: the methods entry's extra options (added to ``run: extra``)."""
    overrides = {**(overrides or {}), **FITS_WITHOUT_TRAINING.get(method, {})}
    if options:
        overrides["extra"] = dict(options)  # run_overrides lays them over run: extra and method_options
    if method in DENSE_METHODS:
        density = 1.0
    if method != "posthoc":
        return [RunSpec(dataset, arch, method, with_options(variant, options or {}), density, seed, overrides)]
    return [RunSpec(dataset, arch, method, with_options(f"ft{epochs}", options or {}), density, seed,
                    {**overrides, "epochs": epochs})
            for epochs in config.get("posthoc_finetune_epochs", [0])]


def main_seeds(config: dict, arch: str) -> list[int]:
    """Seeds of the main comparison for one architecture (``arch_seeds`` may give an arch fewer)."""
    return (config.get("arch_seeds") or {}).get(arch, config["seeds"])


def study_seeds(config: dict, study: dict) -> list[int]:
    """Seeds of an ablation study: its own ``seeds`` if given, else the config's."""
    return study.get("seeds") or config["seeds"]


def _main_runs(config: dict) -> list[RunSpec]:
    method_archs = config.get("method_archs") or {}
    return [run for dataset in config["datasets"] for arch in config["archs"]
            for method, densities, options in method_entries(config) if arch in method_archs.get(method, [arch])
            for density in densities for seed in main_seeds(config, arch)
            for run in _runs_of(config, dataset, arch, method, density, seed, options=options)]


def main_paths(config: dict) -> set[str]:
    """Run paths of the main comparison (methods x densities x main seeds; not ensemble members' extra seeds)."""
    return {run.path for run in _main_runs(config)}


def _criteria_runs(config: dict, defaults: dict) -> list[RunSpec]:
    study = config.get("criteria_ablation")
    if not study:
        return []
    return [run for criterion in study["criteria"] for seed in study_seeds(config, study)
            for run in _runs_of(config, study["dataset"], study["arch"], "ssvi", study["density"], seed,
                                DEFAULT if criterion == defaults["criterion"] else f"crit-{criterion}",
                                {"criterion": criterion})]


def _robustness_runs(config: dict, defaults: dict) -> list[RunSpec]:
    study = config.get("robustness")
    if not study:
        return []
    runs = []
    for sigma in study["sigma_init"]:
        for kl in study["kl_scale"]:
            is_default = sigma == defaults["sigma_init"] and kl == defaults["kl_scale"]
            variant = DEFAULT if is_default else f"sigma{sigma:g}-kl{kl:g}"
            runs += [run for method in study["methods"] for seed in study_seeds(config, study)
                     for run in _runs_of(config, study["dataset"], study["arch"], method, study["density"], seed,
                                         variant, {"sigma_init": sigma, "kl_scale": kl})]
    return runs


def _schedule_runs(config: dict, defaults: dict) -> list[RunSpec]:
    """SSVI over the subspace schedule: ΔT (steps between updates) x α (initial removal fraction)."""
    study = config.get("schedule_ablation")
    if not study:
        return []
    runs = []
    for delta_t in study["delta_t"]:
        for alpha in study["alpha"]:
            is_default = delta_t == defaults["delta_t"] and alpha == defaults["alpha"]
            variant = DEFAULT if is_default else f"dt{delta_t}-a{alpha:g}"
            runs += [run for seed in study_seeds(config, study)
                     for run in _runs_of(config, study["dataset"], study["arch"], "ssvi", study["density"], seed,
                                         variant, {"delta_t": delta_t, "alpha": alpha})]
    return runs


def ensemble_specs(config: dict) -> list[dict]:
    """The ensembles of the config's ``ensembles`` block, one per dataset x arch x entry: method, density (of each
    member; dense_vi: 1), members (M), groups (lists of seeds: one ensemble each, disjoint) and their paths.

    Raises ssvi.config.ConfigError for a seed in two groups (members must not be shared by ensembles whose
    spread is reported), groups of unequal size or of fewer than two members, a method no run can have, or an
    entry without a density (dense_vi excepted)."""
    from ssvi.config import ConfigError
    specs = []
    for entry in config.get("ensembles") or []:
        groups = [list(group) for group in entry["groups"]]
        seeds = [seed for group in groups for seed in group]
        where = f"ensembles entry {entry['method']} at d = {entry.get('density', 1.0)}"
        reused = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if reused:
            raise ConfigError(f"{where}: seed(s) {', '.join(map(str, reused))} appear in more than one group; each "
                              "ensemble needs its own members (with 2M seeds, two independent ensembles of M)")
        sizes = {len(group) for group in groups}
        if len(sizes) != 1 or min(sizes) < 2:
            raise ConfigError(f"{where}: every group must have the same number (>= 2) of seeds, got {groups}")
        if entry["method"] == "posthoc":
            raise ConfigError(f"{where}: post-hoc runs have variants per fine-tuning epochs; ensemble another method")
        if entry["method"] not in DENSE_METHODS and entry.get("density") is None:
            raise ConfigError(f"ensembles entry {entry['method']} has no density: give each member's density (e.g. "
                              f"density: 0.05); only the dense methods' ensembles ({', '.join(sorted(DENSE_METHODS))}) "
                              "go without one")
        density = 1.0 if entry["method"] in DENSE_METHODS else float(entry["density"])
        for dataset in entry.get("datasets") or config["datasets"]:
            for arch in entry.get("archs") or config["archs"]:
                members = [[RunSpec(dataset, arch, entry["method"], DEFAULT, density, seed) for seed in group]
                           for group in groups]
                specs.append({"dataset": dataset, "arch": arch, "method": entry["method"], "density": density,
                              "members": len(groups[0]), "groups": groups,
                              "paths": [[run.path for run in group] for group in members]})
    return specs


def _ensemble_runs(config: dict) -> list[RunSpec]:
    return [RunSpec(*grid_path_parts(path)) for spec in ensemble_specs(config) for group in spec["paths"]
            for path in group]


def grid_path_parts(path: str) -> tuple:
    match = RUN_PATH.search(path)
    return (match["dataset"], match["arch"], match["method"], match["variant"], float(match["density"]),
            int(match["seed"]))


def ensemble_members(config: dict) -> set[str]:
    """Grid paths of every run that is a member of some ensemble (they keep their per-set probabilities)."""
    return {path for spec in ensemble_specs(config) for group in spec["paths"] for path in group}


def run_grid(config: dict) -> dict[str, RunSpec]:
    """Every run of the config, keyed by its relative path (deduplicated, the sources of post-hoc and Laplace
    runs included).

    Raises ssvi.config.ConfigError when two different runs map to one path (e.g. densities 0.1 and
    0.1000001 both print as ``d0.1``)."""
    defaults = recipe_defaults(config)
    runs = (_main_runs(config) + _criteria_runs(config, defaults) + _robustness_runs(config, defaults)
            + _schedule_runs(config, defaults) + _ensemble_runs(config))
    runs += [source for r in runs if (source := source_run(config, r)) is not None]
    grid: dict[str, RunSpec] = {}
    values: dict[str, dict] = {}
    for run in runs:
        resolved = {**defaults, **run_overrides(config, run)}
        if run.path not in grid:
            grid[run.path], values[run.path] = run, resolved
        elif resolved != values[run.path]:
            _refuse_collision(run.path, values[run.path], resolved)
    return grid


def _refuse_collision(path: str, first: dict, second: dict):
    from ssvi.config import ConfigError
    keys = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
    both = "; ".join(f"{key} {first.get(key)!r} and {second.get(key)!r}" for key in keys)
    raise ConfigError(f"two different runs map to the run path {path} ({both}): run paths write numbers "
                      f"with 6 significant digits, so use values that differ within them")


def run_overrides(config: dict, run: RunSpec) -> dict:
    """The full set of run-config values for ``python -m ssvi train`` (excluding the data directory). ``extra``:
    ``run: extra``, then the method's ``method_options`` (its recipe in this config, every run of it), then the
    options of its methods entry (one run per value, named in the run path), later ones winning."""
    values = {**config.get("run", {}), "method": run.method, "dataset": run.dataset, "arch": run.arch,
              "density": run.density, "seed": run.seed, **run.overrides}
    extra = {**config.get("run", {}).get("extra", {}), **(config.get("method_options") or {}).get(run.method, {}),
             **run.overrides.get("extra", {})}
    if extra:
        values["extra"] = extra
    source = source_run(config, run)
    if source is not None:
        values["init_from"] = str(runs_root(config) / source.path)
    return values


def expected_config(config: dict, run: RunSpec) -> dict:
    """The resolved run config a finished run of this grid path records (metrics.json["config"])."""
    from ssvi.config import RunConfig
    return RunConfig.from_dict(run_overrides(config, run)).to_dict()


def expected_values(config: dict, run: RunSpec) -> dict:
    """:func:`expected_config` without validating it (no registry, no torch import: ``ssvi status``)."""
    from ssvi.config import RunConfig, coerce_value
    return {key: coerce_value(key, value) for key, value in {**RunConfig().to_dict(),
                                                             **run_overrides(config, run)}.items()}


def grid_path(run_dir) -> str | None:
    """The grid's relative path of a run dir (``dataset/arch/method/variant/dD/seedS``), or None."""
    match = RUN_PATH.search(Path(run_dir).as_posix())
    return match.group(0).rstrip("/") if match else None


def identity(run_config: dict) -> dict:
    """The recorded config as results identity: ``init_from`` reduced to its grid path, so the comparison
    does not depend on where results_dir was when the run trained."""
    source = run_config.get("init_from")
    return {**run_config, "init_from": grid_path(source) or source} if source else dict(run_config)


def staleness(run_dir, recorded: dict, expected: dict[str, dict]) -> str | None:
    """Why a run is not the one the config's grid expects at its path (None when it is); ``expected``: grid
    path -> expected run config."""
    from ssvi.config import config_differences, describe_differences
    path = grid_path(run_dir)
    if path not in expected:
        return "not a run of this config's grid (its path matches no grid entry)"
    differences = config_differences(identity(recorded), identity(expected[path]))
    return f"differs in {describe_differences(differences)} (recorded -> expected)" if differences else None


def main(argv: list[str]) -> int:
    from ssvi.config import coerce_numbers, load_yaml
    config = coerce_numbers(load_yaml(argv[0]))
    for path in sorted(run_grid(config)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the ssvi package
    sys.exit(main(sys.argv[1:]))
