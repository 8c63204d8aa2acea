"""Optional packages a run needs, checked before anything runs: the method's (``Method.required_packages``) and
the run options' (``tensorboard: true`` needs TensorBoard).

    check_installed({"digits/resnet18/laplace/default/d1/seed0": run_config, ...})   # ConfigError naming them

The workflow calls it at DAG build for every run it may schedule (a missing package would otherwise be found
inside each job: on SLURM, one GPU job each); ``ssvi train`` before it creates its run directory.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping

from .config import ConfigError, RunConfig

OPTION_PACKAGES = {"tensorboard": ("tensorboard",)}  # run option -> the import names it needs when true


def installed(name: str) -> bool:
    """Whether ``import name`` can find the module (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def needed_packages(cfg: RunConfig | dict) -> dict[str, str]:
    """Import name -> the setting that needs it, for one run config."""
    from .methods import get_method
    values = cfg.to_dict() if isinstance(cfg, RunConfig) else cfg
    needs = {name: f"method: {values['method']}" for name in get_method(values["method"]).required_packages}
    for option, names in OPTION_PACKAGES.items():
        if values.get(option):
            needs.update({name: f"{option}: true" for name in names if name not in needs})
    return needs


def check_installed(configs: Mapping[str, RunConfig | dict]) -> None:
    """ConfigError in one line naming every missing package, the setting that needs it and a run that has it."""
    missing: dict[str, tuple[str, str, int]] = {}  # import name -> (setting, first run, number of runs)
    for where, cfg in configs.items():
        for name, setting in needed_packages(cfg).items():
            if name in missing:
                missing[name] = (*missing[name][:2], missing[name][2] + 1)
            elif not installed(name):
                missing[name] = (setting, where, 1)
    if missing:
        parts = [f"{setting} needs the Python package {name!r}, which is not installed for {sys.executable} "
                 f"(run {where}{f' and {count - 1} more' if count > 1 else ''})"
                 for name, (setting, where, count) in missing.items()]
        raise ConfigError("; ".join(parts) + ": install it into this environment (pip install <package>), or "
                          "change the setting")
