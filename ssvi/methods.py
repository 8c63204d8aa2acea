"""Method registry and the hooks every method implements; SSVI itself is registered here.

A method decides which Bayesian layers are sparse, how their masks start and change, what replaces or
follows an optimiser step, and how much a training step costs in FLOPs. The trainer
(:mod:`ssvi.trainer`) runs every method on the same loop. Baselines live in the ``baselines``
package, one file each; they are imported on first use of the registry, as are ``*.py`` files in
the directories named by the environment variable ``SSVI_EXTRA_BASELINES`` (os.pathsep-separated).

    @register_method("my_method")
    class MyMethod(Method):
        extra_keys = frozenset({"temperature"})   # the run config's ``extra`` keys it reads
        def initialize(self, model): ...          # set masks before training starts

Plugin files that fail to import do not take the other methods down: asking for a method that is not
registered names every file that failed and why. Two modules registering one name make that name an
error naming both.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import flops
from .config import ConfigError, RunConfig
from .errors import UserError
from .evaluate import posterior_generator, posterior_samples, predict
from .layers import BayesianLayer, total_kl, variational_parameter_groups
from .posterior import DROPOUT, FITTED, GAUSSIAN, OPTIMIZER, POINT, POSTERIORS, Posterior  # noqa: F401 (re-exported)
from .subspace import (SparsityLayout, layer_densities, mask_gradients, mask_momentum, overall_density,
                       random_mask, select_sparse_layers, set_masks, subspace_update, zero_inactive)

log = logging.getLogger("ssvi")

METHODS: dict[str, type["Method"]] = {}
DUPLICATES: dict[str, list[str]] = {}   # name -> every module that registered it (more than one)
PLUGIN_FAILURES: dict[str, str] = {}    # plugin file -> why it failed to import
EXTRA_BASELINES_ENV = "SSVI_EXTRA_BASELINES"
EXTRA_MODULE_PREFIX = "ssvi_extra_baselines"


class DuplicateMethodError(UserError):
    """Two modules register the same method name."""


def _origin(cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    return f"{cls.__module__} ({path})" if path else cls.__module__


def register_method(name: str):
    def decorate(cls: type[Method]) -> type[Method]:
        previous = METHODS.get(name)
        same_definition = previous is not None and (previous.__module__, previous.__qualname__) == (
            cls.__module__, cls.__qualname__)  # a module imported again (e.g. reloaded)
        if previous is not None and not same_definition:
            DUPLICATES.setdefault(name, [_origin(previous)]).append(_origin(cls))
            raise DuplicateMethodError(_duplicate_message(name))
        cls.name = name
        METHODS[name] = cls
        return cls
    return decorate


def _duplicate_message(name: str) -> str:
    return (f"method {name!r} is registered by more than one module: {' and '.join(DUPLICATES[name])}; "
            "rename one of them")


_plugins_loaded = False


def _plugin_directories() -> list[Path]:
    directories = [Path(d) for d in os.environ.get(EXTRA_BASELINES_ENV, "").split(os.pathsep) if d]
    for directory in directories:
        if not directory.is_dir():
            raise UserError(f"{EXTRA_BASELINES_ENV} names {directory}, which is not a directory; "
                            f"fix or unset {EXTRA_BASELINES_ENV}")
    return directories


def _failure(error: BaseException, path: str) -> str:
    """The error in one line, with the line of the plugin file where it happened."""
    text = str(error) if isinstance(error, UserError) else traceback.format_exception_only(error)[-1].strip()
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
    line = error.lineno if isinstance(error, SyntaxError) else (frames[-1].lineno if frames else None)
    return f"{text} (line {line})" if line else text


def _import_plugin(label: str, load) -> None:
    try:
        load()
    except Exception as error:  # noqa: BLE001  (any error in a plugin file is that file's, not ours)
        PLUGIN_FAILURES[label] = _failure(error, label)
        log.warning("baseline file %s failed to import (%s); its methods are not available", label,
                    PLUGIN_FAILURES[label])


def _exec_file(path: Path) -> None:
    name = f"{EXTRA_MODULE_PREFIX}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so the methods it registers can name their file
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def load_plugins() -> None:
    """Import every baseline module (``baselines/*.py`` and ``$SSVI_EXTRA_BASELINES/*.py``) once; a module
    that fails is recorded in :data:`PLUGIN_FAILURES` (and reported when a missing method is asked for)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    directories = _plugin_directories()
    _plugins_loaded = True
    import baselines
    for info in pkgutil.iter_modules(baselines.__path__):
        label = str(Path(baselines.__path__[0]) / f"{info.name}.py")
        _import_plugin(label, lambda: importlib.import_module(f"baselines.{info.name}"))
    for directory in directories:
        for path in sorted(directory.glob("*.py")):
            _import_plugin(str(path), lambda: _exec_file(path))


def list_methods() -> list[str]:
    load_plugins()
    return sorted(METHODS)


def get_method(name: str) -> type["Method"]:
    """The registered method class; ConfigError naming the registered methods (and every plugin file that
    failed to import) for an unknown name, DuplicateMethodError for a name two modules register."""
    load_plugins()
    if name in DUPLICATES:
        raise DuplicateMethodError(_duplicate_message(name))
    if name not in METHODS:
        failed = "; ".join(f"{path}: {why}" for path, why in PLUGIN_FAILURES.items())
        raise ConfigError(f"method={name!r} is not registered; registered: {', '.join(sorted(METHODS))}"
                          + (f"; baseline files that failed to import: {failed}" if failed else ""))
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
    num_train: int = 0          # training examples (IVON's effective sample size)


class Method:
    """Dense mean-field VI behaviour; sparse methods override the hooks they need.

    Hooks, in the order they are called:
      check_config(cfg)             classmethod, by RunConfig.validate: refuse settings (overrides call super())
      attach(model, ctx)            every start and resume: pick the sparse layers
      build_optimizer(model)        every start and resume, after attach (IVON: the optimiser holds the posterior)
      initialize(model)             fresh start only: set initial masks / load weights
      needs_dense_gradient(step)    before the step's forward: True if step() will need the dense
                                    gradient of mu (the sparse kernels, run option sparse_kernel, give only
                                    the active entries' gradient, so such a step takes the dense path)
      training_sample()             context of the step's forward and backward (IVON: one weight sample)
      kl(model), kl_scale           the KL term of a variational posterior and its scale (kl_scale / N_train)
      kl_weight(weight, epoch)      each epoch: the KL term's weight in the loss (``weight`` = the recipe's
                                    kl_scale / N_train * warm-up; variational posteriors only)
      extra_loss(logits, labels)    each training step, before backward(): a term added to the loss (None: none)
      step(step, optimizer) -> bool after backward(); True when the step was a subspace update
      train_flops_per_example(step) FLOPs of that training step per example
      optimizer_flops_per_step(step) FLOPs of the step's optimiser work beyond SGD's (IVON's sampling), per step
      finalize(run)                 once, after the last epoch and before evaluation (e.g. BatchNorm repair,
                                    Laplace's fit)
      predictive_samples(...)       K x N x C probabilities whose mean is the predictive
      posterior_state()             what the predictive needs besides the weights: stored with the final model
      restore_posterior(...)        a finished run's posterior made ready to predict (ssvi evaluate)
      result_info()                 method-specific entries of metrics.json

    A method whose masks follow a schedule names it in ``mask_schedule`` and lists its steps in
    ``update_steps(delta_t)``; ``attach`` then refuses a run with fewer than ``min_subspace_updates`` of them.

    The posterior is declared, not special-cased: ``posterior`` names one of :data:`ssvi.posterior.POSTERIORS`
    ("gaussian", the default: LRT + KL, K weight samples; "point": mean weights, one forward pass; "optimizer",
    "fitted", "dropout": the posterior lives in the optimiser's state, is fitted after training, or comes from
    dropout masks). The trainer, the FLOPs count and the evaluation read the declaration; the hooks above
    supply the rest. ``required_packages`` lists the import names of libraries a method needs beyond the
    suite's own (checked when the workflow builds its DAG).
    """

    name = "base"
    extra_keys: frozenset[str] = frozenset()  # the run config's ``extra`` keys this method reads
    # what min_subspace_updates counts in update_steps ("subspace updates", "pruning steps"); None: no minimum
    mask_schedule: str | None = None
    posterior = GAUSSIAN
    # import names of the optional packages the method needs (e.g. ("laplace",)): checked at DAG build and by
    # `ssvi train` before anything runs (ssvi.packages)
    required_packages: tuple[str, ...] = ()
    init_from_run = False  # starts from another finished run (run option init_from) and may train 0 epochs

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.layers: dict[str, BayesianLayer] = {}  # the sparsified layers (empty = dense)
        self.records: list[dict] = []                # one record per mask update, saved with the results
        self._densities: dict[str, float] | None = None

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Raise ConfigError for settings this method cannot run with (called by RunConfig.validate).
        Overrides call ``super().check_config(cfg)``: it refuses ``extra`` keys the method does not read."""
        if cls.posterior not in POSTERIORS:
            raise ConfigError(f"method {cls.name!r} declares posterior={cls.posterior!r}, which is not a kind of "
                              f"posterior; allowed: {', '.join(POSTERIORS)} (ssvi.posterior)")
        needed = cfg.min_subspace_updates
        if isinstance(needed, bool) or not isinstance(needed, int) or needed < 0:
            raise ConfigError(f"min_subspace_updates={needed!r} must be an integer >= 0")
        unread = sorted(set(cfg.extra) - cls.extra_keys)
        if unread:
            reads = ", ".join(sorted(cls.extra_keys)) or "none"
            raise ConfigError(f"extra key(s) {', '.join(map(repr, unread))} are not read by method {cls.name!r} "
                              f"(it reads: {reads}); remove them or choose the method that reads them")

    @classmethod
    def posterior_kind(cls) -> Posterior:
        return POSTERIORS[cls.posterior]

    @classmethod
    def is_point_estimate(cls) -> bool:
        """One forward pass per prediction (no samples, no epistemic part)."""
        return not cls.posterior_kind().sampled

    @property
    def forward_mode(self) -> str:
        """The layers' forward mode in training: the LRT for a Gaussian posterior, the mean weights otherwise."""
        return self.posterior_kind().training_mode

    @property
    def forward_products(self) -> int:
        """Products (convolutions / matmuls) per Bayesian layer in a training forward pass (FLOPs)."""
        return flops.LRT_FORWARD_FACTOR if self.forward_mode == "lrt" else 1

    @property
    def removal_criterion(self) -> str:
        """The score that ranks active weights when masks change (the run config's ``criterion``)."""
        return self.cfg.criterion

    @property
    def layout(self) -> SparsityLayout:
        return SparsityLayout(self.cfg.dense_first_layer, self.cfg.sparse_shortcuts, self.cfg.sparse_classifier)

    def attach(self, model: nn.Module, ctx: TrainContext) -> None:
        self.model, self.ctx = model, ctx
        self.check_update_count()

    def update_steps(self, delta_t: int) -> Sequence[int]:
        """The training steps (counted from 1) at which the method's schedule changes the masks."""
        return ()

    def check_update_count(self) -> None:
        """ConfigError when the schedule would make fewer than ``min_subspace_updates`` mask updates (a
        static run under a dynamic method's name), suggesting the largest delta_t that makes enough."""
        cfg, ctx, needed = self.cfg, self.ctx, self.cfg.min_subspace_updates
        if self.mask_schedule is None or len(self.update_steps(cfg.delta_t)) >= needed:
            return
        largest = next((d for d in range(min(cfg.delta_t, max(ctx.t_end, 1)), 0, -1)
                        if len(self.update_steps(d)) >= needed), None)
        fix = (f"use delta_t <= {largest} (--set delta_t={largest})" if largest else
               "no delta_t is enough: train more epochs or raise t_end_frac")
        raise ConfigError(
            f"method {self.name!r} would make too few {self.mask_schedule} ({len(self.update_steps(cfg.delta_t))} < "
            f"min_subspace_updates={needed}): {ctx.total_steps} steps ({ctx.total_steps // cfg.epochs} per epoch), "
            f"t_end={ctx.t_end} (t_end_frac={cfg.t_end_frac}), delta_t={cfg.delta_t}; {fix}, or set "
            "min_subspace_updates=0 to run it anyway")

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The recipe's SGD with two parameter groups: mu, BatchNorm and biases with weight decay; rho with its own
        lr and none (a posterior without sigma leaves rho untrained)."""
        cfg = self.cfg
        mu_and_deterministic, rho = variational_parameter_groups(model)
        groups = [{"params": mu_and_deterministic, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
        if self.posterior_kind().variational:
            groups.append({"params": rho, "lr": cfg.lr_rho, "weight_decay": 0.0})
        else:
            for p in rho:
                p.requires_grad_(False)
        return torch.optim.SGD(groups, momentum=cfg.momentum)

    def initialize(self, model: nn.Module) -> None:
        """Fresh start only (on resume, masks and weights come from the checkpoint)."""

    def training_sample(self) -> contextlib.AbstractContextManager:
        """The context a training step's forward and backward run in (IVON: a weight sample of its posterior)."""
        return contextlib.nullcontext()

    @property
    def kl_scale(self) -> float:
        """The KL term's weight before the 1 / N_train scaling and the warm-up (run option kl_scale)."""
        return self.cfg.kl_scale

    def kl(self, model: nn.Module) -> torch.Tensor:
        """The KL term of a variational posterior: closed-form KL to the N(0, prior_std^2) prior."""
        return total_kl(model, self.cfg.prior_std)

    def masked_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        mask_gradients(self.layers)
        optimizer.step()
        zero_inactive(self.layers)
        mask_momentum(optimizer, self.layers)

    def needs_dense_gradient(self, step: int) -> bool:
        return False

    def kl_weight(self, weight: float, epoch: int) -> float:
        """The KL term's weight in epoch ``epoch``'s loss (loss = CE + this * KL); ``weight`` is the recipe's
        kl_scale / N_train * min(2 epoch / epochs, 1). Override to reweight or reschedule the KL term."""
        return weight

    def extra_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """A term added to every training step's loss (a scalar tensor in the autograd graph of ``logits`` or of
        ``self.model``'s parameters), or None for none. It is part of the logged ``loss``, not of ``ce`` or ``kl``."""
        return None

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
        return flops.sparse_step(self.ctx.profile, self.densities(), self.forward_products)

    def optimizer_flops_per_step(self, step: int) -> float:
        """FLOPs of the optimiser's own work in a step beyond SGD's update, which the convention leaves out."""
        return 0.0

    def initial_train_flops(self) -> float:
        """Training FLOPs spent before this run started (two-stage methods)."""
        return 0.0

    def initial_train_time(self) -> float:
        """Training seconds spent before this run started (two-stage methods: the source run's)."""
        return 0.0

    def finalize(self, run) -> None:
        """Once, after the last epoch and before evaluation (``run``: ssvi.trainer.Run). Add the FLOPs it
        spends to ``run.train_flops`` (and, for a fit, its seconds to ``run.wall_time``)."""

    # ---- prediction -----------------------------------------------------------------------------
    def num_predictive_samples(self) -> int:
        return self.cfg.num_samples if self.posterior_kind().sampled else 1

    def predictive_samples(self, model: nn.Module, x: torch.Tensor, *, mean, std, batch_size: int,
                           device) -> torch.Tensor:
        """K x N x C probabilities whose mean over K is the run's predictive: K weight samples of the Bayesian
        layers from the seeded generator every evaluation of the run uses, or for a point estimate its one
        forward pass (1 x N x C). Other kinds override this."""
        common = dict(mean=mean, std=std, batch_size=batch_size, device=device)
        y = torch.zeros(len(x), dtype=torch.long)
        if self.posterior == POINT:
            return predict(model, x, y, mode="mean", **common)[None]
        if self.posterior != GAUSSIAN:
            raise NotImplementedError(f"method {self.name!r} declares posterior {self.posterior!r} and must "
                                      "implement predictive_samples")
        return posterior_samples(model, x, y, num_samples=self.cfg.num_samples,
                                 generator=posterior_generator(self.cfg.seed), **common)

    def prediction_flops(self) -> float:
        """FLOPs of one prediction per example: one forward at the final densities per sample."""
        return self.num_predictive_samples() * self.ctx.profile.forward(self.densities())

    def posterior_state(self) -> dict:
        """What the predictive needs besides the model's weights (plain data and tensors), stored with the
        final model; :meth:`load_posterior_state` reads it back."""
        return {}

    def load_posterior_state(self, state: dict | None) -> None:
        pass

    def restore_posterior(self, model: nn.Module, final_state: dict, device) -> None:
        """Make a finished run's posterior ready to predict without building its training run (``ssvi
        evaluate``): ``model`` holds the final weights on ``device``, ``final_state`` the state stored with them."""
        self.model = model
        if "method" in final_state:
            self.load_state_dict(final_state["method"])
        self.load_posterior_state(final_state.get("posterior"))

    def result_info(self) -> dict:
        """Method-specific entries of metrics.json (recorded beside the config)."""
        return {"posterior": self.posterior, "posterior_description": self.posterior_kind().description,
                "removal_criterion": self.removal_criterion if self.layers else None}

    def state_dict(self) -> dict:
        return {"records": self.records}

    def load_state_dict(self, state: dict) -> None:
        self.records = list(state["records"])
        self.masks_changed()


@register_method("ssvi")
class SSVI(Method):
    """Sparse Subspace VI: random initial masks at density d, removal-and-addition every delta_t steps."""

    mask_schedule = "subspace updates"

    def attach(self, model, ctx):
        super().attach(model, ctx)
        self.layers = select_sparse_layers(model, self.layout)

    def update_steps(self, delta_t):
        return range(delta_t, self.ctx.t_end, delta_t)  # multiples of delta_t before t_end

    def initialize(self, model):
        set_masks(self.layers, {n: random_mask(l.mask.shape, self.cfg.density, self.ctx.generator)
                                for n, l in self.layers.items()})
        self.masks_changed()

    def updates_subspace(self, step: int) -> bool:
        return step in self.update_steps(self.cfg.delta_t)

    def needs_dense_gradient(self, step):
        return self.updates_subspace(step)  # the addition step ranks inactive weights by |dL/dmu|

    def step(self, step, optimizer):
        if not self.updates_subspace(step):
            self.masked_optimizer_step(optimizer)
            return False
        record = subspace_update(self.layers, optimizer, step, self.ctx.t_end, self.cfg.alpha,
                                 self.removal_criterion, self.cfg.lam)
        self.records.append(record)
        return True

    def train_flops_per_example(self, step):
        if step < self.ctx.t_end:
            return flops.ssvi_update_phase_step(self.ctx.profile, self.densities(), self.cfg.delta_t,
                                                self.forward_products)
        return flops.sparse_step(self.ctx.profile, self.densities(), self.forward_products)
