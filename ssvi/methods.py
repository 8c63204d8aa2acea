"""Method registry and the hooks every method implements; SSVI itself is registered here.

A method decides which Bayesian layers are sparse, how their masks start and change, what replaces or
follows an optimiser step, and how much a training step costs in FLOPs. The trainer
(:mod:`ssvi.trainer`) runs every method on the same loop. Baselines live in the ``baselines``
package, one file each; they are imported on first use of the registry, as are ``*.py`` files in
the directories named by the environment variable ``SSVI_EXTRA_BASELINES`` (os.pathsep-separated).

    @register_method("my_method")
    class MyMethod(Method):
        def initialize(self, model): ...   # set masks before training starts
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import flops
from .config import RunConfig
from .layers import BayesianLayer
from .subspace import (SparsityLayout, layer_densities, mask_gradients, mask_momentum, overall_density,
                       random_mask, select_sparse_layers, set_masks, subspace_update, zero_inactive)

METHODS: dict[str, type["Method"]] = {}
EXTRA_BASELINES_ENV = "SSVI_EXTRA_BASELINES"


def register_method(name: str):
    def decorate(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls
    return decorate


_plugins_loaded = False


def load_plugins() -> None:
    """Import every baseline module (``baselines/*.py`` and ``$SSVI_EXTRA_BASELINES/*.py``) once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import baselines
    for info in pkgutil.iter_modules(baselines.__path__):
        importlib.import_module(f"baselines.{info.name}")
    for directory in filter(None, os.environ.get(EXTRA_BASELINES_ENV, "").split(os.pathsep)):
        for path in sorted(Path(directory).glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"ssvi_extra_baselines.{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)


def list_methods() -> list[str]:
    load_plugins()
    return sorted(METHODS)


def get_method(name: str) -> type["Method"]:
    load_plugins()
    return METHODS[name]


def create_method(cfg: RunConfig) -> "Method":
    return get_method(cfg.method)(cfg)


@dataclass
class TrainContext:
    """What a method may need to know about the run it is part of."""

    total_steps: int       # optimiser steps of the whole run
    t_end: int             # subspace updates / pruning stop at this step
    profile: flops.FlopProfile
    generator: torch.Generator  # seeded; for masks


class Method:
    """Dense mean-field VI behaviour; sparse methods override the hooks they need.

    Hooks, in the order the trainer calls them:
      attach(model, ctx)            every start and resume: pick the sparse layers
      initialize(model)             fresh start only: set initial masks / load weights
      step(step, optimizer) -> bool after backward(); True when the step was a subspace update
      train_flops_per_example(step) FLOPs of that training step per example
    """

    name = "base"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.layers: dict[str, BayesianLayer] = {}  # the sparsified layers (empty = dense)
        self.records: list[dict] = []                # per-update records, saved with the results
        self._densities: dict[str, float] | None = None

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Raise ConfigError for settings this method cannot run with (called by RunConfig.validate)."""

    @property
    def layout(self) -> SparsityLayout:
        return SparsityLayout(self.cfg.dense_first_layer, self.cfg.sparse_shortcuts, self.cfg.sparse_classifier)

    def attach(self, model: nn.Module, ctx: TrainContext) -> None:
        self.model, self.ctx = model, ctx

    def initialize(self, model: nn.Module) -> None:
        """Fresh start only (on resume, masks and weights come from the checkpoint)."""

    def masked_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        mask_gradients(self.layers)
        optimizer.step()
        zero_inactive(self.layers)
        mask_momentum(optimizer, self.layers)

    def step(self, step: int, optimizer: torch.optim.Optimizer) -> bool:
        self.masked_optimizer_step(optimizer)
        return False

    def masks_changed(self) -> None:
        """Call after changing masks: densities are cached (counting them every step would sync a GPU)."""
        self._densities = None

    def densities(self) -> dict[str, float]:
        if self._densities is None:
            self._densities = layer_densities(self.layers)
        return self._densities

    def density(self) -> float:
        return overall_density(self.layers)

    def train_flops_per_example(self, step: int) -> float:
        return flops.sparse_step(self.ctx.profile, self.densities())

    def initial_train_flops(self) -> float:
        """Training FLOPs spent before this run started (two-stage methods)."""
        return 0.0

    def state_dict(self) -> dict:
        return {"records": self.records}

    def load_state_dict(self, state: dict) -> None:
        self.records = list(state["records"])
        self.masks_changed()


@register_method("ssvi")
class SSVI(Method):
    """Sparse Subspace VI: random initial masks at density d, removal-and-addition every delta_t steps."""

    def attach(self, model, ctx):
        super().attach(model, ctx)
        self.layers = select_sparse_layers(model, self.layout)

    def initialize(self, model):
        set_masks(self.layers, {n: random_mask(l.mask.shape, self.cfg.density, self.ctx.generator)
                                for n, l in self.layers.items()})
        self.masks_changed()

    def updates_subspace(self, step: int) -> bool:
        return step % self.cfg.delta_t == 0 and step < self.ctx.t_end

    def step(self, step, optimizer):
        if not self.updates_subspace(step):
            self.masked_optimizer_step(optimizer)
            return False
        record = subspace_update(self.layers, optimizer, step, self.ctx.t_end, self.cfg.alpha,
                                 self.cfg.criterion, self.cfg.lam)
        self.records.append(record)
        return True

    def train_flops_per_example(self, step):
        if step < self.ctx.t_end:
            return flops.ssvi_update_phase_step(self.ctx.profile, self.densities(), self.cfg.delta_t)
        return flops.sparse_step(self.ctx.profile, self.densities())
