"""An LRT layer that stores and computes on its active weights only: im2col + ``torch.sparse`` matmuls
(CSR or BSR), sampled weight gradients. A measurement device for :mod:`ssvi.bench.routes`, not a
training path.

    sparse = SparseLRTLayer(dense_layer, "csr")   # same output as dense_layer for the same seed
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import BayesConv2d, BayesianLayer, BayesLinear
from ..reference import LRT_EPS


@dataclass
class Geometry:
    """How a layer's input becomes the [K, N] column matrix its weight [C_out, K] multiplies."""

    kind: str                       # "conv" or "linear"
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @classmethod
    def of(cls, layer: BayesianLayer) -> "Geometry":
        if isinstance(layer, BayesLinear):
            return cls("linear")
        if not isinstance(layer, BayesConv2d) or layer.groups != 1 or isinstance(layer.padding, str):
            raise ValueError("sparse route: only linear layers and ungrouped, numerically padded convolutions")
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        return cls("conv", pair(layer.kernel_size), pair(layer.stride), pair(layer.padding), pair(layer.dilation))

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def im2col(self, x: torch.Tensor) -> torch.Tensor:
        """[K, N] columns: K = C * kh * kw (the weight's order), N = B * H_out * W_out. One copy."""
        if self.kind == "linear":
            return x.t()
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        b, c, h, w = x.shape
        ho, wo = self.out_hw(h, w)
        xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x.contiguous()
        s_b, s_c, s_h, s_w = xp.stride()
        view = xp.as_strided((c, kh, kw, b, ho, wo), (s_c, dh * s_h, dw * s_w, s_b, sh * s_h, sw * s_w))
        return view.reshape(c * kh * kw, b * ho * wo)

    def col2im(self, cols: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
        """Adjoint of :meth:`im2col` (overlapping windows summed)."""
        if self.kind == "linear":
            return cols.t()
        b, c, h, w = x_shape
        ho, wo = self.out_hw(h, w)
        blocks = cols.view(cols.shape[0], b, ho * wo).permute(1, 0, 2)
        return F.fold(blocks, (h, w), self.kernel, dilation=self.dilation, padding=self.padding, stride=self.stride)

    def rows_to_out(self, rows: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
        """[C_out, N] -> the layer output layout ([B, C_out, H_out, W_out] or [B, C_out]); a view."""
        if self.kind == "linear":
            return rows.t()
        b, _, h, w = x_shape
        ho, wo = self.out_hw(h, w)
        return rows.view(rows.shape[0], b, ho, wo).permute(1, 0, 2, 3)

    def out_to_rows(self, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return out.t()
        return out.permute(1, 0, 2, 3).reshape(out.shape[1], -1)


def _index_map(index_plus_one: torch.Tensor, layout: str, blocksize: tuple[int, int] | None = None):
    """Sparse structure of ``index_plus_one`` (a float64 [rows, cols] matrix holding active-entry index + 1,
    0 elsewhere) in ``layout``; returns (crow, col, value index into [0] + active values)."""
    if layout == "csr":
        s = index_plus_one.to_sparse_csr()
        return s.crow_indices(), s.col_indices(), s.values().long()
    s = index_plus_one.to_sparse_bsr(blocksize)
    return s.crow_indices(), s.col_indices(), s.values().long()


class SparsePattern:
    """A fixed sparsity pattern of a [C_out, K] weight matrix, in CSR or BSR, and of its transpose.

    Weights live as a vector of active values (row-major order of the mask); the sparse matrices are
    assembled from it by a precomputed gather (BSR stores explicit zeros inside active blocks)."""

    def __init__(self, mask2d: torch.Tensor, layout: str = "csr", blocksize: tuple[int, int] | None = None,
                 dtype: torch.dtype = torch.float32):
        with warnings.catch_warnings():  # "sparse support is in beta" (warned once per process)
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*beta.*")
            self._build(mask2d, layout, blocksize, dtype)

    def _build(self, mask2d: torch.Tensor, layout: str, blocksize: tuple[int, int] | None, dtype) -> None:
        self.layout, self.blocksize = layout, blocksize
        self.shape = tuple(mask2d.shape)
        self.nnz = int(mask2d.sum())
        index = torch.zeros(self.shape, dtype=torch.float64, device=mask2d.device)
        index[mask2d] = torch.arange(1, self.nnz + 1, dtype=torch.float64, device=mask2d.device)
        self.crow, self.col, self.gather = _index_map(index, layout, blocksize)
        tb = blocksize[::-1] if blocksize else None
        self.crow_t, self.col_t, self.gather_t = _index_map(index.t().contiguous(), layout, tb)
        # the element pattern for weight gradients at active entries only (always CSR)
        if layout == "csr":
            zeros = torch.zeros(self.nnz, dtype=dtype, device=mask2d.device)
            self.grad_pattern = torch.sparse_csr_tensor(self.crow, self.col, zeros, self.shape, check_invariants=False)
        else:
            csr = SparsePattern(mask2d, "csr", dtype=dtype)
            self.grad_pattern = csr.grad_pattern
        self.stored = int(self.gather.numel())  # stored values including explicit zeros (BSR)

    def _assemble(self, values: torch.Tensor, crow, col, gather, shape, blocksize) -> torch.Tensor:
        padded = torch.cat([values.new_zeros(1), values])
        stored = padded[gather]
        if self.layout == "csr":
            return torch.sparse_csr_tensor(crow, col, stored, shape, check_invariants=False)
        return torch.sparse_bsr_tensor(crow, col, stored, shape, check_invariants=False)

    def weight(self, values: torch.Tensor) -> torch.Tensor:
        if self.layout == "csr":  # CSR values are the active values in mask order: no gather
            return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)
        return self._assemble(values, self.crow, self.col, self.gather, self.shape, self.blocksize)

    def weight_t(self, values: torch.Tensor) -> torch.Tensor:
        return self._assemble(values, self.crow_t, self.col_t, self.gather_t, self.shape[::-1], None)

    def sampled_grad(self, grad_rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(grad_rows @ cols^T) at the active entries only, as the vector of active values."""
        return torch.sparse.sampled_addmm(self.grad_pattern, grad_rows, cols.t(), beta=0.0).values()


class _SparseLRT(torch.autograd.Function):
    """Mean and variance products of the LRT with sparse weights sharing one im2col.

    forward: cols = im2col(x); mean = W_mu @ cols; var = W_var @ cols^2 (sparse @ dense)
    backward: d cols = W_mu^T @ d mean + 2 cols * (W_var^T @ d var) (sparse transposes), one col2im;
              d values = (d rows @ cols^T) sampled at active entries (``sampled_addmm``)."""

    @staticmethod
    def forward(ctx, x, mu_values, var_values, pattern: SparsePattern, geometry: Geometry):
        cols = geometry.im2col(x)
        mean = torch.sparse.mm(pattern.weight(mu_values), cols)
        var = torch.sparse.mm(pattern.weight(var_values), cols * cols)
        ctx.save_for_backward(cols, mu_values, var_values)  # cols: K/C times the input's memory, saves an im2col
        ctx.pattern, ctx.geometry, ctx.x_shape = pattern, geometry, x.shape
        return geometry.rows_to_out(mean, x.shape), geometry.rows_to_out(var, x.shape)

    @staticmethod
    def backward(ctx, d_mean, d_var):
        cols, mu_values, var_values = ctx.saved_tensors
        pattern, geometry = ctx.pattern, ctx.geometry
        cols_sq = cols * cols
        d_mean_rows, d_var_rows = geometry.out_to_rows(d_mean), geometry.out_to_rows(d_var)
        d_x = d_mu = d_var_values = None
        if ctx.needs_input_grad[1]:
            d_mu = pattern.sampled_grad(d_mean_rows, cols)
        if ctx.needs_input_grad[2]:
            d_var_values = pattern.sampled_grad(d_var_rows, cols_sq)
        if ctx.needs_input_grad[0]:
            d_cols = torch.sparse.mm(pattern.weight_t(mu_values), d_mean_rows)
            d_cols = d_cols.addcmul_(torch.sparse.mm(pattern.weight_t(var_values), d_var_rows), cols, value=2.0)
            d_x = geometry.col2im(d_cols, ctx.x_shape)
        return d_x, d_mu, d_var_values, None, None


class SparseLRTLayer(nn.Module):
    """The LRT forward of a Bayesian layer with only its active weights stored and computed on.

    Parameters are the active entries of mu and rho (vectors); the output equals the production
    layer's for the same seed (one randn of the output shape per call)."""

    def __init__(self, layer: BayesianLayer, layout: str = "csr", blocksize: tuple[int, int] | None = None):
        super().__init__()
        self.geometry = Geometry.of(layer)
        c_out = layer.weight_mu.shape[0]
        mask2d = layer.mask.reshape(c_out, -1)
        self.pattern = SparsePattern(mask2d, layout, blocksize, layer.weight_mu.dtype)
        self.mu = nn.Parameter(layer.weight_mu.detach().reshape(c_out, -1)[mask2d].clone())
        self.rho = nn.Parameter(layer.weight_rho.detach().reshape(c_out, -1)[mask2d].clone())
        self.bias = nn.Parameter(layer.bias.detach().clone()) if layer.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var_values = F.softplus(self.rho).pow(2)
        mean, var = _SparseLRT.apply(x, self.mu, var_values, self.pattern, self.geometry)
        if self.bias is not None:
            mean = mean + (self.bias.view(1, -1, 1, 1) if self.geometry.kind == "conv" else self.bias)
        noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device)  # = randn_like(contiguous output)
        return mean + torch.sqrt(var + LRT_EPS) * noise
