"""The run configuration: one typed object whose defaults are the paper's recipe (reference section 2).

A run is one method x dataset x architecture x density x seed x hyperparameters. Load it from YAML
with :func:`load_config`; every unknown key or out-of-range value stops at once with an error that
names the key and the allowed values.

    cfg = load_config("run.yaml")                 # or RunConfig(method="ssvi", density=0.1)
    cfg = RunConfig.from_dict({"method": "ssvi", "epochs": 5})
    values = load_yaml("config/paper.yaml")       # any YAML file: duplicate keys refused, 1e-3 is a float

Numbers: PyYAML follows YAML 1.1, which reads ``1e-3`` (no dot) as a string. :func:`load_yaml` and
``--set`` read such exponent forms as floats, and float/int keys of a run config also accept them as
strings (configs loaded by other YAML readers, e.g. snakemake's); :func:`coerce_numbers` does that for
any nested config.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

PRECISIONS = ("fp32", "bf16")
SPARSE_KERNELS = ("none", "all", "auto")
SEED_LIMIT = 2**32  # numpy's legacy seeding, which seed_everything uses, takes seeds below 2**32
# sigma = softplus(rho) is initialised as rho = log(expm1(sigma)), which overflows float32 from sigma ~ 88.7;
# a weight std of 10 is already far beyond any useful posterior
SIGMA_MAX = 10.0
DEVICE_FORM = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
# keys that may change between a run and its resumption without changing its results
# (min_subspace_updates only decides whether a run is accepted)
ENVIRONMENT_KEYS = ("data_dir", "download", "device", "threads", "data_on_device", "min_subspace_updates",
                    "tensorboard")


def opt(default: Any, help: str) -> Any:
    """A config field with its default and its --help text."""
    return field(default=default, metadata={"help": help})


class ConfigError(UserError, ValueError):
    """A run configuration that cannot be used; the message names the key."""


def results_config(values: dict) -> dict:
    """The part of a resolved run config that identifies its results (environment keys dropped)."""
    return {k: v for k, v in values.items() if k not in ENVIRONMENT_KEYS}


def config_differences(recorded: dict, expected: dict) -> dict[str, tuple[Any, Any]]:
    """Result-identity keys whose values differ: key -> (recorded, expected); missing keys read as absent."""
    a, b = results_config(recorded), results_config(expected)
    missing = "<absent>"
    return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)}


def describe_differences(differences: dict[str, tuple[Any, Any]]) -> str:
    """``key: recorded -> expected`` for each differing key, comma-separated."""
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in differences.items())


@dataclass
class RunConfig:
    # --- what to run -------------------------------------------------------------------------
    method: str = opt("ssvi", 'a registered method: ssvi, dense_vi, gradual_pruning, posthoc, static_sparse, ...')
    dataset: str = opt("digits", 'a registered dataset: digits (embedded), cifar10, cifar100, svhn')
    arch: str = opt("resnet18", 'a registered architecture (resnet18, vgg16) or timm/<name>')
    width: float = opt(1.0, "channel width multiplier (1.0 = the paper's model)")
    image_size: int | None = opt(None, "resize inputs (None = the dataset's native size; digits: 16)")
    seed: int = opt(0, 'seeds model init, masks, data order and LRT noise')
    density: float = opt(0.1, 'fraction of active weights in each sparsified layer; dense_vi uses 1')
    # --- optimisation (authors' script values) ------------------------------------------------
    epochs: int = opt(200, 'posthoc: fine-tuning epochs (0 = pure post-hoc pruning); laplace: 0')
    batch_size: int = opt(128, 'training minibatch size')
    lr: float = opt(0.01, 'mu, BatchNorm and biases')
    lr_rho: float = opt(0.01, 'rho (its own group, no weight decay)')
    momentum: float = opt(0.9, 'SGD momentum (both groups)')
    weight_decay: float = opt(5e-4, 'weight decay of the mu/BatchNorm/bias group')
    # --- variational objective ------------------------------------------------------------------
    kl_scale: float = opt(0.01, 'loss = CE + kl_scale / N_train * min(2 epoch / epochs, 1) * KL')
    prior_std: float = opt(0.005, 'std of the N(0, prior_std^2) prior on every Bayesian weight')
    mu_init_std: float = opt(0.01, 'mu ~ N(0, mu_init_std^2) at initialisation')
    sigma_init: float = opt(6e-4, 'sigma ~ |N(sigma_init, sigma_init_std^2)|')
    sigma_init_std: float = opt(5e-4, 'spread of the initial sigma')
    # --- sparse subspace ------------------------------------------------------------------------
    delta_t: int = opt(100, 'steps between subspace updates (and gradual pruning steps)')
    min_subspace_updates: int = opt(1, 'ssvi / gradual_pruning refuse a run with fewer subspace updates (pruning steps); 0 = none needed')
    t_end_frac: float = opt(0.75, 'updates stop at t_end_frac * total steps')
    alpha: float = opt(0.3, 'initial removal fraction (cosine-decayed)')
    criterion: str = opt("SNR_mean_abs", 'removal criterion (ssvi.criteria.CRITERIA) of ssvi and gradual_pruning '
                                         '(posthoc ranks by snr, deterministic_sparse by |mu|)')
    lam: float = opt(1.0, 'lambda of the exp criteria')
    dense_first_layer: bool = opt(True, 'keep the first conv dense')
    sparse_shortcuts: bool = opt(True, 'sparsify 1x1 shortcut convs')
    sparse_classifier: bool = opt(True, 'sparsify the final linear layer')
    # --- two-stage methods ------------------------------------------------------------------------
    init_from: str | None = opt(None, 'posthoc: the finished dense_vi run to compress; '
                                      'laplace: the finished point estimate to fit')
    # --- evaluation -------------------------------------------------------------------------------
    num_samples: int = opt(10, 'K posterior weight samples for the predictive (point-estimate methods: 1 forward)')
    eval_batch_size: int = opt(500, 'batch size of evaluation passes')
    # --- environment ------------------------------------------------------------------------------
    data_dir: str = opt("data", 'directory holding the datasets (see docs/running.md)')
    download: bool = opt(False, 'let torchvision download missing datasets (needs internet)')
    device: str = opt("auto", 'auto | cpu | cuda | cuda:N')
    threads: int | None = opt(None, "torch CPU threads of training and of every evaluation of the run "
                                    "(None = torch's default)")
    tensorboard: bool = opt(False, 'also write per-epoch scalars (loss, CE, KL, lr, test accuracy, density, '
                                   'seconds) as TensorBoard event files in <out>/tensorboard (needs tensorboard)')
    # --- speed: the GPU fast path (docs/performance.md); all off = the plain path ------------------
    data_on_device: bool = opt(False, 'keep the training set on the training device and augment there '
                                      '(no host copy or synchronisation per batch; same batches)')
    channels_last: bool = opt(False, 'model and batches in channels-last memory format '
                                     '(meant for GPU tensor cores; slower on CPUs)')
    precision: str = opt("fp32", 'fp32 | bf16: bf16 autocast for the mean path of training steps; '
                                 'the variance path, KL, optimiser and evaluation stay fp32')
    sparse_kernel: str = opt("none", 'none | all | auto: CPU sparse kernels for the LRT products of sparsified layers '
                                     '(ssvi.sparse_lrt; all = every such layer, auto = where measured faster, per layer)')
    extra: dict[str, Any] = field(default_factory=dict, metadata={"help": "method-specific options of user baselines"})

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; "
                              f"allowed keys: {', '.join(sorted(allowed))}")
        cfg = cls(**{k: _coerce(k, v) for k, v in values.items()})
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        from . import criteria, data, models
        from .methods import get_method
        get_method(self.method).check_config(self)  # an unknown name: ConfigError listing the methods
        _check_choice("dataset", self.dataset, data.list_datasets())
        if self.arch.startswith(models.TIMM_PREFIX) and not models.is_known_model(self.arch):
            raise ConfigError(f"arch={self.arch!r} is not a timm model; timm.list_models() lists the names "
                              f"(e.g. {models.TIMM_PREFIX}resnet18)")
        if not models.is_known_model(self.arch):
            raise ConfigError(f"arch={self.arch!r} is not a registered architecture; "
                              f"allowed: {', '.join(models.list_models())} or timm/<name>")
        _check_choice("criterion", self.criterion, list(criteria.CRITERIA))
        _check_choice("precision", self.precision, list(PRECISIONS))
        _check_choice("sparse_kernel", self.sparse_kernel, list(SPARSE_KERNELS))
        if self.sparse_kernel != "none" and (self.precision != "fp32" or self.channels_last):
            raise ConfigError(f"sparse_kernel={self.sparse_kernel!r} computes in fp32 and its own memory layout; "
                              "use it with precision=fp32 and channels_last=false")
        _check_range("density", self.density, 0.0, 1.0, low_open=True)
        _check_range("t_end_frac", self.t_end_frac, 0.0, 1.0)
        _check_range("alpha", self.alpha, 0.0, 1.0)
        _check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        # finite bounds far beyond any sensible value: they stop typos and .inf before a job starts
        for key, low, high, low_open in NUMERIC_BOUNDS:
            _check_range(key, getattr(self, key), low, high, low_open=low_open)
        for key in ("batch_size", "delta_t", "num_samples", "eval_batch_size"):
            _check_int(key, getattr(self, key), 1)
        _check_int("epochs", self.epochs, 0 if get_method(self.method).init_from_run else 1)
        _check_int("seed", self.seed, 0, SEED_LIMIT - 1)
        if self.image_size is not None:
            _check_int("image_size", self.image_size, 4)
        if self.threads is not None:
            _check_int("threads", self.threads, 1)
        if not DEVICE_FORM.fullmatch(self.device):
            raise ConfigError(f"device={self.device!r} is not allowed; allowed: auto, cpu, cuda, cuda:N (N = 0, 1, ...)")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    path = Path(path)
    values = load_yaml(path) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(values).__name__}")
    values.update(overrides or {})
    return RunConfig.from_dict(values)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is parsed as YAML (so 0.1, 1e-3, true, null work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.load(value, Loader=StrictLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({_yaml_problem(error)})") from None


# --------------------------------------------------------------------------------------------
# YAML: exponent floats, no duplicate keys, errors that name the file and line
# --------------------------------------------------------------------------------------------

# YAML 1.2 floats that YAML 1.1 (PyYAML) reads as strings: an exponent without a dot or without a sign
EXPONENT_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue  # SafeLoader itself refuses it below, with its own message
            if key in seen:
                raise DuplicateKeyError(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep)


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789."))


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int):
        super().__init__(f"key {key!r} appears twice (lines {first} and {second}); keep one")


def load_yaml(path: str | Path) -> Any:
    """A YAML file read with :class:`StrictLoader`; every problem is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; name a YAML file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read ({getattr(error, 'strerror', None) or error})") from None
    try:
        return yaml.load(text, Loader=StrictLoader)
    except DuplicateKeyError as error:
        raise ConfigError(f"config file {path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML ({_yaml_problem(error)}); fix the file") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    return getattr(error, "problem", None) or str(error).splitlines()[0]


def coerce_numbers(value: Any) -> Any:
    """``value`` with every string of an exponent float (``"1e-3"``) made a float, in nested dicts and lists."""
    if isinstance(value, dict):
        return {k: coerce_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce_numbers(v) for v in value]
    if isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------

_FIELD_TYPES = {f.name: f.type for f in fields(RunConfig)}
# (key, low, high, low end open): the numbers without a narrower range in RunConfig.validate
NUMERIC_BOUNDS = (
    ("lr", 0.0, 100.0, True), ("lr_rho", 0.0, 100.0, False), ("weight_decay", 0.0, 1.0, False),
    ("kl_scale", 0.0, 1e6, False), ("prior_std", 0.0, 1e3, True), ("mu_init_std", 0.0, 10.0, True),
    ("sigma_init", 0.0, SIGMA_MAX, True), ("sigma_init_std", 0.0, SIGMA_MAX, False), ("width", 0.0, 16.0, True),
    ("lam", 0.0, 1e6, True),
)


def coerce_value(key: str, value: Any) -> Any:
    """``value`` as the run-config key ``key`` holds it (ints of float keys as floats, "1e-3" as a number),
    without validation; unknown keys unchanged."""
    return _coerce(key, value) if key in _FIELD_TYPES else value


def _coerce(key: str, value: Any) -> Any:
    """Accept ints where floats are expected, and numbers given as strings ("1e-3") for number keys."""
    expected = _FIELD_TYPES[key]
    if ("float" in expected or "int" in expected) and isinstance(value, str):
        value = _number_from_text(value)
    if "float" in expected and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
    if expected == "str" and not isinstance(value, str):
        raise ConfigError(f"{key}={value!r} must be a string")
    if expected.startswith("dict") and not isinstance(value, dict):
        raise ConfigError(f"{key}={value!r} must be a mapping")
    return value


def _check_choice(key: str, value: Any, allowed: list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {', '.join(allowed)}")


def _check_range(key: str, value: Any, low: float, high: float, low_open=False, high_open=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} must be a number")
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {interval}")


def _number_from_text(text: str) -> Any:
    """The int or float a number key's string spells (``"1e-3"``, ``"5"``); other text unchanged."""
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        return number if math.isfinite(number) or kind is int else text  # "inf"/"nan" stay text
    return text


def _check_int(key: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{key}={value!r} must be an integer {allowed}")
