"""Mean-field Gaussian Bayesian layers (reference section 1).

Each weight has q(theta) = N(mu, sigma^2) with sigma = softplus(rho); biases stay deterministic.
A boolean ``mask`` (shared by mu and rho) marks the active weights of the sparse subspace:
inactive mu and rho are kept at exactly 0 by the subspace and never contribute.

Three forward modes (set with :func:`set_mode` on a whole model):
  - ``"lrt"``    local reparameterization (training): out = op(x, mu) + sqrt(op(x^2, sigma^2) + 1e-8) * eps
  - ``"mean"``   posterior mean weights (deterministic prediction)
  - ``"sample"`` one full weight sample theta = mu + sigma * eps, fixed until :func:`resample` is called,
                 so a posterior-predictive sample stays the same across the whole test set.

Usage::

    layer = BayesConv2d(3, 16, 3, padding=1)
    y = layer(x)                # LRT forward
    kl = layer.kl(prior_std=0.005)
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError
from .sparse_lrt import lrt_products, uses_sparse

LRT_EPS = 1e-8  # keeps sqrt differentiable where the variance path is exactly 0
# redraw rounds for sigma = 0 draws; with a valid sigma_init, even one more round is almost never needed
MAX_RHO_DRAWS = 100
MODES = ("lrt", "mean", "sample")


@dataclass(frozen=True)
class PosteriorInit:
    """Initialisation of the variational parameters (authors' code values)."""

    mu_std: float = 0.01  # mu ~ N(0, mu_std^2)
    sigma_mean: float = 6e-4  # sigma ~ |N(sigma_mean, sigma_std^2)|
    sigma_std: float = 5e-4


def inverse_softplus(sigma: torch.Tensor) -> torch.Tensor:
    """rho such that softplus(rho) = sigma (log(expm1(sigma)) is exact for small sigma)."""
    return torch.log(torch.expm1(sigma))


def sample_rho(shape: torch.Size, init: PosteriorInit, generator: torch.Generator | None = None) -> torch.Tensor:
    """rho = softplus^-1(|N(sigma_mean, sigma_std^2)|), redrawing entries that come out non-finite (sigma = 0,
    or so large that expm1 overflows); gives up after ``MAX_RHO_DRAWS`` rounds."""
    rho = torch.full(shape, float("nan"))
    bad = torch.ones(shape, dtype=torch.bool)
    for _ in range(MAX_RHO_DRAWS):
        draw = (init.sigma_mean + init.sigma_std * torch.randn(int(bad.sum()), generator=generator)).abs()
        rho[bad] = inverse_softplus(draw)
        bad = ~torch.isfinite(rho)
        if not bad.any():
            return rho
    raise UserError(f"no finite initial rho after {MAX_RHO_DRAWS} draws of sigma ~ |N(sigma_init={init.sigma_mean}, "
                    f"sigma_init_std={init.sigma_std}^2)|: float32's softplus inverse overflows beyond ~88 and "
                    "underflows at 0; lower sigma_init (the recipe's is 6e-4) or sigma_init_std")


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor, prior_std: float) -> torch.Tensor:
    """Elementwise KL(N(mu, sigma^2) || N(0, prior_std^2)) = log(s / sigma) + (sigma^2 + mu^2) / (2 s^2) - 1/2."""
    return torch.addcmul(mu * mu, sigma, sigma).mul_(0.5 / prior_std**2).sub_(torch.log(sigma)).add_(
        math.log(prior_std) - 0.5)


class BayesianLayer(nn.Module, abc.ABC):
    """Shared state and logic of the Bayesian Conv2d and Linear layers.

    Subclasses implement :meth:`_op` (the deterministic operation for a given weight and bias).
    """

    weight_mu: nn.Parameter
    weight_rho: nn.Parameter
    bias: nn.Parameter | None
    mask: torch.Tensor

    def _init_bayesian(self, weight_shape: tuple[int, ...], bias: bool, init: PosteriorInit) -> None:
        self.weight_mu = nn.Parameter(torch.randn(weight_shape) * init.mu_std)
        self.weight_rho = nn.Parameter(sample_rho(torch.Size(weight_shape), init))
        self.bias = nn.Parameter(torch.zeros(weight_shape[0])) if bias else None
        self.register_buffer("mask", torch.ones(weight_shape, dtype=torch.bool))
        self.register_buffer("sampled_weight", None, persistent=False)
        self._sigma_cache: tuple[int, torch.Tensor] | None = None
        self.mode = "lrt"
        self.lrt_route = "dense"  # or the sparse kernels' "all" / "auto" (ssvi.sparse_lrt.set_lrt_route)

    @abc.abstractmethod
    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The deterministic operation (conv or linear) for the given weight."""

    @property
    def sigma(self) -> torch.Tensor:
        return F.softplus(self.weight_rho)

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw one full weight sample used by ``"sample"`` mode until the next call."""
        with torch.no_grad():
            # drawn on the generator's device (CPU) so a seeded evaluation is the same on every machine
            eps = torch.randn(self.weight_mu.shape, generator=generator).to(self.weight_mu.device)
            self.sampled_weight = (self.weight_mu + self.sigma * eps) * self.mask

    def _sigma_of_last_forward(self) -> torch.Tensor:
        """The KL of a training step reuses the sigma its LRT forward computed (one softplus per step).
        The cache is used once and only while rho is unchanged (its version counter, bumped by every
        in-place update, still matches)."""
        cached, self._sigma_cache = self._sigma_cache, None
        if cached is not None and cached[0] == self.weight_rho._version:
            return cached[1]
        return self.sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return self._op(x, self.weight_mu, self.bias)
        if self.mode == "sample":
            if self.sampled_weight is None:
                raise RuntimeError("sample mode needs a weight sample: call ssvi.layers.resample(model) first")
            return self._op(x, self.sampled_weight, self.bias)
        sigma = self.sigma
        if torch.is_grad_enabled():
            self._sigma_cache = (self.weight_rho._version, sigma)
        if self.lrt_route != "dense" and uses_sparse(self, x):  # run option sparse_kernel (ssvi.sparse_lrt)
            mean, variance = lrt_products(self, x, sigma)
        else:
            mean, variance = self.dense_products(x, sigma)
        # in place: the convolution's backward needs its inputs, not its output
        std = variance.add_(LRT_EPS).sqrt_()
        # fp32 noise and output even when the mean path ran in bf16
        return torch.addcmul(mean, std, torch.randn_like(std))

    def dense_products(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The masked dense LRT products (op(x, mu) + bias, op(x^2, sigma^2 * mask))."""
        mean = self._op(x, self.weight_mu, self.bias)  # inactive mu are exactly 0: no mask multiplication
        if torch.is_autocast_enabled(x.device.type):
            # The variance path sums products of tiny sigma^2 (~1e-7) and squared activations: it
            # stays fp32 inside a bf16 autocast region, where only the mean path runs in bf16.
            with torch.autocast(x.device.type, enabled=False):
                return mean, self._variance(x.float(), sigma)
        return mean, self._variance(x, sigma)

    def _variance(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        # sigma^2 masked: inactive rho = 0 would otherwise give sigma = 0.69
        return self._op(x * x, sigma.square() * self.mask, None)

    def kl(self, prior_std: float) -> torch.Tensor:
        """Closed-form KL to N(0, prior_std^2), summed over active weights."""
        return (gaussian_kl(self.weight_mu, self._sigma_of_last_forward(), prior_std) * self.mask).sum()

    def num_active(self) -> int:
        return int(self.mask.sum())


class BayesConv2d(BayesianLayer):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True, init: PosteriorInit = PosteriorInit()):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.dilation, self.groups = dilation, groups
        self._init_bayesian((out_channels, in_channels // groups, kh, kw), bias, init)

    def _op(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")


class BayesLinear(BayesianLayer):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: PosteriorInit = PosteriorInit()):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_bayesian((out_features, in_features), bias, init)

    def _op(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


# ---------------------------------------------------------------------------------------------
# Whole-model helpers
# ---------------------------------------------------------------------------------------------

def bayesian_layers(model: nn.Module) -> dict[str, BayesianLayer]:
    """All Bayesian layers of ``model`` by qualified name, in module (= forward) order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BayesianLayer)}


def set_mode(model: nn.Module, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown Bayesian forward mode {mode!r}; allowed: {', '.join(MODES)}")
    for layer in bayesian_layers(model).values():
        layer.mode = mode


def resample(model: nn.Module, generator: torch.Generator | None = None) -> None:
    for layer in bayesian_layers(model).values():
        layer.resample(generator)


def total_kl(model: nn.Module, prior_std: float) -> torch.Tensor:
    return sum(layer.kl(prior_std) for layer in bayesian_layers(model).values())


def variational_parameter_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(mu + deterministic parameters, rho parameters): the two optimiser groups of the recipe."""
    rho_ids = {id(layer.weight_rho) for layer in bayesian_layers(model).values()}
    params = list(model.parameters())
    return [p for p in params if id(p) not in rho_ids], [p for p in params if id(p) in rho_ids]
