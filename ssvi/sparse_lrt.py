"""Sparse LRT products: conv(x, mu) and conv(x^2, sigma^2) of a sparsified Bayesian layer from one index.

The LRT forward of a Bayesian layer needs two products whose weights share one sparsity pattern (the mask).
Here both come from one traversal of an index of the active weights (ssvi/csrc/sparse_lrt.cpp, a small
C++ extension built on first use by ``torch.utils.cpp_extension`` for the CPU it runs on and cached), and
so do their gradients: the input gradient and the gradients of the *active* mu and sigma^2 values only
(``weight_mu.grad`` is zero at inactive weights, where the masked dense path has the dense gradient).

Run option ``sparse_kernel`` (``ssvi.config``): ``none`` (default: the masked dense path), ``all`` (every
sparsified conv / linear layer in training-mode LRT forwards), ``auto`` (per layer, whichever of the two
paths is faster, measured once per layer shape, input shape and density, as SparseProp's
``sparsify_if_faster`` does; the choices are recorded in ``metrics.json``). Steps that need the dense
gradient of mu (SSVI's subspace updates) take the dense path (``Method.needs_dense_gradient``). CPU and
fp32 only. Groups / dilation other than 1 stay dense.

    from ssvi.sparse_lrt import lrt_products
    mean, variance = lrt_products(layer, x, layer.sigma)   # equal to the masked dense products
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "sparse_lrt.cpp"
ROUTES = ("dense", "all", "auto")
AUTO_REPEATS = 3  # timed forward + backward passes per path when ``auto`` chooses


def cpu_identity() -> str:
    """Model name and instruction-set flags of this CPU: the extension is built with -march=native, so a
    cached build is only reused on the same kind of CPU (home directories are shared across cluster nodes)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = {"model name", "flags"}
        return "|".join(line for line in lines if line.split(":")[0].strip() in wanted)[:4096] or platform.processor()
    except OSError:
        return platform.processor() or platform.machine()


@functools.cache
def kernels():
    """The compiled extension (built on first use, ~1 min; later loads come from torch's extension cache)."""
    from torch.utils import cpp_extension

    # one cached build per CPU kind and Python environment (torch rebuilds when its build flags change)
    tag = hashlib.sha1("|".join([cpu_identity(), sys.prefix, torch.__version__]).encode()).hexdigest()[:10]
    name = f"ssvi_sparse_lrt_{tag}"
    log.info("loading the sparse LRT kernels (%s; the first use on this CPU compiles them, about a minute)", name)
    started = time.perf_counter()
    try:
        module = cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=["-O3", "-march=native"],
                                    verbose=False)
    except (RuntimeError, OSError, ImportError) as error:  # no compiler, no ninja, a failed build
        raise UserError(f"sparse_kernel needs the C++ extension {SOURCE.name}, which did not build ({error}); it "
                        "needs a C++ compiler (g++) and ninja (pip install ninja), or run with sparse_kernel=none"
                        ) from error
    log.info("sparse LRT kernels ready in %.1f s", time.perf_counter() - started)
    return module


@dataclass(frozen=True)
class SparseIndex:
    """The active weights of a mask, ordered by (oc, ic, kh, kw), and the same entries grouped by input channel and
    kernel-offset residue mod the stride (the input gradient of a strided conv reads one group per pixel)."""

    built_from: tuple[int, int, int]  # (data_ptr, version) of the mask it was built from, and the stride
    flat: torch.Tensor            # positions of the active weights in the flattened weight
    oc_start: torch.Tensor        # entries of output channel o: oc_start[o] .. oc_start[o + 1]
    ic: torch.Tensor
    kh: torch.Tensor
    kw: torch.Tensor
    group_start: torch.Tensor     # transposed entries of group g = (ic * S + kh % S) * S + kw % S (S = stride)
    t_oc: torch.Tensor
    t_kh: torch.Tensor
    t_kw: torch.Tensor
    t_entry: torch.Tensor         # the forward entry each transposed entry is

    @property
    def active(self) -> int:
        return len(self.flat)


def build_index(mask: torch.Tensor, stride: int = 1) -> SparseIndex:
    """Index of a conv mask (OC x IC x KH x KW) or a linear mask (OUT x IN, taken as 1 x 1 kernels)."""
    out_channels, in_channels, kh, kw = (*mask.shape, 1, 1)[:4]
    flat = mask.flatten().nonzero().squeeze(1)
    per_oc = in_channels * kh * kw
    oc, rest = flat // per_oc, flat % per_oc
    ic, r, s = rest // (kh * kw), (rest // kw) % kh, rest % kw
    group = (ic * stride + r % stride) * stride + s % stride
    order = torch.argsort(group * (out_channels * kh * kw) + oc * (kh * kw) + r * kw + s)
    return SparseIndex(
        built_from=(mask.data_ptr(), mask._version, stride), flat=flat,
        oc_start=torch.searchsorted(oc, torch.arange(out_channels + 1)), ic=ic, kh=r, kw=s,
        group_start=torch.searchsorted(group[order], torch.arange(in_channels * stride * stride + 1)),
        t_oc=oc[order], t_kh=r[order], t_kw=s[order], t_entry=order)


def layer_index(layer) -> SparseIndex:
    """The layer's index, rebuilt whenever its mask changed (any in-place change bumps the version)."""
    stride = _pair_value(getattr(layer, "stride", 1))
    index = getattr(layer, "_sparse_index", None)
    if index is None or index.built_from != (layer.mask.data_ptr(), layer.mask._version, stride):
        index = layer._sparse_index = build_index(layer.mask, stride)
    return index


def _pair_value(value) -> int | None:
    """An int, or the common value of an (a, a) pair; None for anything else (("same"), (1, 2), ...)."""
    if isinstance(value, int):
        return value
    return value[0] if isinstance(value, tuple) and len(set(value)) == 1 and isinstance(value[0], int) else None


def supports(layer) -> bool:
    """Conv layers with groups = dilation = 1, square kernels and equal integer stride / padding; linear layers."""
    if not hasattr(layer, "kernel_size"):
        return True
    return (layer.groups == 1 and _pair_value(layer.dilation) == 1 and _pair_value(layer.stride) is not None
            and _pair_value(layer.padding) is not None and layer.kernel_size[0] == layer.kernel_size[1])


def _geometry(layer, x: torch.Tensor) -> list[int]:
    if not hasattr(layer, "kernel_size"):
        return [x.shape[1], 1, 1, layer.out_features, 1, 1, 1, 0]
    stride, padding, k = _pair_value(layer.stride), _pair_value(layer.padding), layer.kernel_size[0]
    _, channels, height, width = x.shape
    return [channels, height, width, layer.out_channels, (height + 2 * padding - k) // stride + 1,
            (width + 2 * padding - k) // stride + 1, stride, padding]


class _SparseLRT(torch.autograd.Function):
    """(x, active mu values, active sigma^2 values) -> (conv(x, mu), conv(x^2, sigma^2)), both N x OC x OH x OW."""

    @staticmethod
    def forward(ctx, x, mu_values, var_values, index: SparseIndex, geometry: list[int]):
        ext, n = kernels(), x.shape[0]
        x_blocks, square_blocks = ext.to_blocks(x.reshape(n, -1).contiguous(), True)
        mean, variance = ext.forward(x_blocks, square_blocks, index.oc_start, index.ic, index.kh, index.kw,
                                     mu_values.contiguous(), var_values.contiguous(), geometry)
        ctx.save_for_backward(x_blocks, square_blocks, mu_values, var_values)
        ctx.index, ctx.geometry, ctx.input_shape = index, geometry, x.shape
        out_shape = [n, geometry[3], geometry[4], geometry[5]]
        return ext.from_blocks(mean, out_shape), ext.from_blocks(variance, out_shape)

    @staticmethod
    def backward(ctx, grad_mean, grad_var):
        ext, (x_blocks, square_blocks, mu_values, var_values), index = kernels(), ctx.saved_tensors, ctx.index
        n = ctx.input_shape[0]
        out_shape = (n, ctx.geometry[3], ctx.geometry[4], ctx.geometry[5])

        def blocks(grad):
            grad = torch.zeros(out_shape) if grad is None else grad
            return ext.to_blocks(grad.reshape(n, -1).contiguous(), False)[0]

        grad_mean, grad_var = blocks(grad_mean), blocks(grad_var)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = ext.from_blocks(
                ext.backward_input(grad_mean, grad_var, x_blocks, index.group_start, index.t_oc, index.t_kh, index.t_kw,
                                   index.t_entry, mu_values.contiguous(), var_values.contiguous(), ctx.geometry),
                list(ctx.input_shape))
        grad_mu, grad_var_values = ext.backward_weights(grad_mean, grad_var, x_blocks, square_blocks, index.oc_start,
                                                        index.ic, index.kh, index.kw, ctx.geometry)
        return grad_x, grad_mu, grad_var_values, None, None


def lrt_products(layer, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(op(x, mu) + bias, op(x^2, sigma^2 * mask)) of a Bayesian conv / linear layer with the sparse kernels."""
    index = layer_index(layer)
    mu_values = layer.weight_mu.flatten()[index.flat]
    var_values = sigma.flatten()[index.flat].square()
    linear = x.dim() == 2
    x4 = x[:, :, None, None] if linear else x
    mean, variance = _SparseLRT.apply(x4, mu_values, var_values, index, _geometry(layer, x4))
    if linear:
        mean, variance = mean.flatten(1), variance.flatten(1)
    if layer.bias is not None:
        mean = mean + (layer.bias if linear else layer.bias.view(1, -1, 1, 1))
    return mean, variance


def _time_path(products, layer, x: torch.Tensor) -> float:
    """Median seconds of one forward + backward of ``products`` (input, mu and rho gradients, as in training) on a
    detached input; the gradients are returned, not accumulated, so the layer's ``.grad`` stays untouched."""
    times = []
    for _ in range(AUTO_REPEATS):
        probe = x.detach().requires_grad_(True)
        with torch.enable_grad():
            started = time.perf_counter()
            mean, variance = products(layer, probe, layer.sigma)
            torch.autograd.grad((mean.sum() + variance.sum(),), (probe, layer.weight_mu, layer.weight_rho))
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def choose_route(layer, x: torch.Tensor) -> bool:
    """``auto``: is the sparse path faster for this layer, input shape and density? Measured once per key."""
    choices = layer.__dict__.setdefault("_route_choices", {})
    key = (tuple(x.shape), round(layer_index(layer).active / layer.mask.numel(), 3))
    if key not in choices:
        dense, sparse = _time_path(type(layer).dense_products, layer, x), _time_path(lrt_products, layer, x)
        choices[key] = {"input_shape": list(x.shape), "density": key[1], "dense_ms": round(dense * 1e3, 3),
                        "sparse_ms": round(sparse * 1e3, 3), "route": "sparse" if sparse < dense else "dense"}
    return choices[key]["route"] == "sparse"


def uses_sparse(layer, x: torch.Tensor) -> bool:
    """Whether this LRT forward of ``layer`` takes the sparse kernels (its ``lrt_route`` and support)."""
    route = layer.lrt_route
    if route == "dense" or x.device.type != "cpu" or x.dtype != torch.float32 or not supports(layer):
        return False
    return route == "all" or choose_route(layer, x)


def set_lrt_route(layers, route: str) -> None:
    """Set the LRT route (``dense``, ``all`` or ``auto``) of the sparsified layers for the next forwards."""
    if route not in ROUTES:
        raise ValueError(f"unknown LRT route {route!r}; allowed: {', '.join(ROUTES)}")
    for layer in layers.values():
        layer.lrt_route = route


def route_choices(layers) -> dict[str, list[dict]]:
    """The per-layer measurements and choices of ``auto`` (empty for layers it never measured)."""
    return {name: list(layer.__dict__.get("_route_choices", {}).values()) for name, layer in layers.items()
            if layer.__dict__.get("_route_choices")}


def check_sparse_kernel_device(device: torch.device, sparse_kernel: str) -> None:
    if sparse_kernel != "none" and device.type != "cpu":
        raise UserError(f"sparse_kernel={sparse_kernel!r} is a CPU kernel; on {device.type} use sparse_kernel=none "
                        "(the masked dense path)")
