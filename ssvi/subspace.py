"""The sparse subspace of SSVI (reference section 3, the paper's Algorithm 1 as implemented).

A boolean mask per sparsified Bayesian layer, shared by mu and rho, at a uniform density d. Every
``delta_t`` steps while ``step < t_end`` the update below *replaces* that minibatch's optimiser step:

  1. zeta = (alpha / 2) * (1 + cos(pi * step / t_end)); k = floor(zeta * n_active)
  2. remove: keep the n_active - k active weights with the highest removal-criterion score
  3. add: among all weights not kept, activate the k with the largest |dL/dmu| (dense gradient)
  4. newly added weights get mu = 0 and rho = the mean rho over every weight active both before and
     after the update (the criterion-kept weights and the weights removed and re-added in this update:
     the authors' ``grow_std_init`` averages every non-zero rho after masking); removed weights are
     zeroed and forgotten; a weight removed and re-added in the same update keeps its values.

Density is therefore exactly constant. At each update the removal sets of all six criteria are
compared (IoU and Spearman rank correlation) for the paper's criteria tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import criteria
from .layers import BayesianLayer, BayesLinear, bayesian_layers

SHORTCUT_NAMES = ("shortcut", "downsample")  # our ResNet; torchvision / timm ResNets


@dataclass(frozen=True)
class SparsityLayout:
    """Which Bayesian layers are sparsified (reference: first conv dense, the rest sparse)."""

    dense_first_layer: bool = True
    sparse_shortcuts: bool = True
    sparse_classifier: bool = True


def select_sparse_layers(model: nn.Module, layout: SparsityLayout = SparsityLayout()) -> dict[str, BayesianLayer]:
    layers = bayesian_layers(model)
    names = list(layers)
    excluded = set()
    if layout.dense_first_layer and names:
        excluded.add(names[0])
    if not layout.sparse_shortcuts:
        excluded |= {n for n in names if any(s in n.split(".") for s in SHORTCUT_NAMES)}
    linears = [n for n in names if isinstance(layers[n], BayesLinear)]
    if not layout.sparse_classifier and linears:
        excluded.add(linears[-1])
    return {n: layers[n] for n in names if n not in excluded}


# --------------------------------------------------------------------------------------------
# Mask maintenance: inactive mu, rho, gradients and momentum are exactly zero
# --------------------------------------------------------------------------------------------

def num_kept(numel: int, density: float) -> int:
    """Active weights of a layer of ``numel`` at ``density``: the authors' count n - int((1 - d) n)."""
    return max(1, min(numel, numel - int((1 - density) * numel)))


def random_mask(shape: torch.Size, density: float, generator: torch.Generator) -> torch.Tensor:
    numel = math.prod(shape)
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[torch.randperm(numel, generator=generator)[: num_kept(numel, density)]] = True
    return mask.view(shape)


@torch.no_grad()
def zero_inactive(layers: dict[str, BayesianLayer]) -> None:
    for layer in layers.values():
        layer.weight_mu.mul_(layer.mask)
        layer.weight_rho.mul_(layer.mask)


@torch.no_grad()
def mask_gradients(layers: dict[str, BayesianLayer]) -> None:
    for layer in layers.values():
        for p in (layer.weight_mu, layer.weight_rho):
            if p.grad is not None:
                p.grad.mul_(layer.mask)


@torch.no_grad()
def mask_momentum(optimizer: torch.optim.Optimizer, layers: dict[str, BayesianLayer]) -> None:
    for layer in layers.values():
        for p in (layer.weight_mu, layer.weight_rho):
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.mul_(layer.mask)


def set_masks(layers: dict[str, BayesianLayer], masks: dict[str, torch.Tensor]) -> None:
    for name, layer in layers.items():
        layer.mask.copy_(masks[name])
    zero_inactive(layers)


def overall_density(layers: dict[str, BayesianLayer]) -> float:
    active = sum(layer.num_active() for layer in layers.values())
    total = sum(layer.mask.numel() for layer in layers.values())
    return active / total if total else 1.0


def layer_densities(layers: dict[str, BayesianLayer]) -> dict[str, float]:
    return {name: layer.num_active() / layer.mask.numel() for name, layer in layers.items()}


def top_score_mask(layer: BayesianLayer, density: float, criterion: str, lam: float) -> torch.Tensor:
    """Mask of the ``density`` fraction of currently active weights with the highest criterion score."""
    scores = criteria.score(criterion, layer.weight_mu.detach(), layer.sigma.detach(), lam)
    scores = scores.masked_fill(~layer.mask, float("-inf")).flatten()
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[torch.topk(scores, num_kept(scores.numel(), density)).indices] = True
    return keep.view_as(layer.mask) & layer.mask


# --------------------------------------------------------------------------------------------
# The removal-and-addition update
# --------------------------------------------------------------------------------------------

def removal_fraction(step: int, t_end: int, alpha: float) -> float:
    return alpha / 2 * (1 + math.cos(math.pi * step / t_end))


def _top_active(scores: torch.Tensor, active_idx: torch.Tensor, n_keep: int, numel: int) -> torch.Tensor:
    """Boolean mask (length numel) of the n_keep active entries with the highest score.

    ``scores`` are given for the active entries only, in the order of ``active_idx``."""
    kept = torch.zeros(numel, dtype=torch.bool, device=active_idx.device)
    kept[active_idx[torch.topk(scores, n_keep).indices]] = True
    return kept


@torch.no_grad()
def update_layer(layer: BayesianLayer, zeta: float, criterion: str, lam: float) -> dict[str, torch.Tensor] | None:
    """One removal-and-addition update of ``layer`` (uses the dense ``weight_mu.grad``).

    Returns every criterion's score vector over the active weights and its removal set, for the
    criteria comparison, or None when nothing moves (k = 0).
    """
    mu, rho = layer.weight_mu, layer.weight_rho
    if mu.grad is None:
        raise RuntimeError("subspace update needs the dense gradient of mu: call backward() first")
    active = layer.mask.flatten().clone()  # a copy: the mask is rewritten below
    active_idx = active.nonzero().squeeze(1)
    n_active, numel = active_idx.numel(), active.numel()
    k = int(math.floor(zeta * n_active))
    if k == 0:
        return None
    # scores of active weights only: inactive ones are never kept
    mu_active, sigma_active = mu.detach().flatten()[active_idx], layer.sigma.detach().flatten()[active_idx]
    scores = {c: criteria.score(c, mu_active, sigma_active, lam) for c in criteria.CRITERIA}
    kept = _top_active(scores[criterion], active_idx, n_active - k, numel)
    growth = mu.grad.flatten().abs().masked_fill(kept, float("-inf"))
    added = torch.zeros_like(active)
    added[torch.topk(growth, k).indices] = True
    new_mask = kept | added
    fresh = added & ~active  # re-added weights (added & active) keep their values
    # Writes go through masks of the parameter's shape (logical order), not a flat view: a flat view
    # does not exist for channels-last weights. detach() shares the parameters' version counters, so
    # these writes invalidate cached sigmas.
    fresh, new_mask, kept = (m.view(mu.shape) for m in (fresh, new_mask, kept))
    mu_data, rho_data = mu.detach(), rho.detach()
    # mean over kept and re-added weights, taken before the fresh ones receive their rho
    still_active = new_mask & active.view(mu.shape)
    grown_rho = rho_data[still_active].mean()
    mu_data[fresh] = 0.0
    rho_data[fresh] = grown_rho
    mu_data[~new_mask] = 0.0
    rho_data[~new_mask] = 0.0
    layer.mask.copy_(new_mask)
    removed = {c: active & ~_top_active(s, active_idx, n_active - k, numel) for c, s in scores.items()}
    return {"scores": scores, "removed": removed}


def compare_criteria(per_layer: list[dict]) -> dict[str, list[list[float]]]:
    """IoU of removal sets and Spearman rank correlation of scores between every pair of criteria,
    pooled over layers (IoU = sum of intersections / sum of unions; ranks over all active weights)."""
    names = criteria.CRITERIA
    pooled = {c: torch.cat([r["scores"][c] for r in per_layer]) for c in names}
    size = len(names)
    iou = [[1.0] * size for _ in range(size)]
    spearman = [[1.0] * size for _ in range(size)]
    for i, a in enumerate(names):
        for j in range(i + 1, size):
            b = names[j]
            inter = sum(int((r["removed"][a] & r["removed"][b]).sum()) for r in per_layer)
            union = sum(int((r["removed"][a] | r["removed"][b]).sum()) for r in per_layer)
            iou[i][j] = iou[j][i] = inter / union if union else 1.0
            spearman[i][j] = spearman[j][i] = criteria.spearman(pooled[a], pooled[b])
    return {"criteria": list(names), "iou": iou, "spearman": spearman}


@torch.no_grad()
def subspace_update(layers: dict[str, BayesianLayer], optimizer: torch.optim.Optimizer, step: int, t_end: int,
                    alpha: float, criterion: str, lam: float) -> dict:
    """Update every sparse layer; returns the record of this update (step, zeta, criteria comparison)."""
    zeta = removal_fraction(step, t_end, alpha)
    per_layer = [r for layer in layers.values() if (r := update_layer(layer, zeta, criterion, lam)) is not None]
    mask_momentum(optimizer, layers)
    record = {"step": step, "zeta": zeta, "moved": sum(int(r["removed"][criterion].sum()) for r in per_layer)}
    if per_layer:
        record.update(compare_criteria(per_layer))
    return record
