"""Layer-level microbenchmark: the production (dense masked) LRT layer against sparse routes, per ResNet-18
layer shape and density; every route's outputs and gradients are verified against the dense layer before
it is timed. Routes: ``kernel`` (the project's sparse LRT kernels, run option ``sparse_kernel``:
:mod:`ssvi.sparse_lrt`), ``csr`` / ``bsr`` (PyTorch's sparse tensors,
:class:`ssvi.bench.sparse_layer.SparseLRTLayer`) and ``bsr_block`` (a hypothetical block-structured mask).

    benchmark_sparse_routes(width=1.0, batch=128, image_size=32, device=torch.device("cpu"), seed=0)
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import warnings

import torch
import torch.nn as nn

from ..layers import BayesConv2d, BayesianLayer, BayesLinear, PosteriorInit
from .sparse_layer import SparseLRTLayer
from .timing import log, ratio, summarize, sync, timed
from .train_step import NUM_CLASSES

MICRO_DENSITIES = (0.05, 0.1, 0.2)
MICRO_ROUTES = ("kernel", "csr", "bsr")  # also available: "bsr_block" (hypothetical block-structured mask)
ALL_ROUTES = ("kernel", "csr", "bsr", "bsr_block")
BSR_BLOCK = 4                  # block edge tried first (then 2) for the BSR routes
MICRO_MIN_SAMPLE_S = 0.02      # small layers repeat inside one sample until it lasts this long
MICRO_SLOW_FACTOR = 2.0        # a route this many times slower than dense in its verification run gets 1 sample


def micro_shapes(width: float, image_size: int) -> list[dict]:
    """Layer shapes of the CIFAR ResNet-18 at ``width`` (spatial sizes scaled with ``image_size``)."""
    from ..models import scaled
    c = [scaled(v, width) for v in (64, 128, 256, 512)]
    hw = [max(1, image_size // 2**i) for i in range(4)]
    shapes = [{"name": f"conv3x3_{c[i]}x{c[i]}_{hw[i]}x{hw[i]}", "kind": "conv", "in": c[i], "out": c[i],
               "kernel": 3, "stride": 1, "padding": 1, "hw": hw[i]} for i in range(4)]
    shapes.append({"name": f"conv1x1_{c[0]}to{c[1]}_stride2_{hw[0]}x{hw[0]}", "kind": "conv", "in": c[0],
                   "out": c[1], "kernel": 1, "stride": 2, "padding": 0, "hw": hw[0]})
    shapes.append({"name": f"linear_{c[3]}to{NUM_CLASSES}", "kind": "linear", "in": c[3], "out": NUM_CLASSES})
    shapes.append({"name": f"linear_{c[3]}to{c[3]}", "kind": "linear", "in": c[3], "out": c[3]})
    return shapes


def _make_layer(shape: dict, density: float, seed: int, device: torch.device) -> BayesianLayer:
    from ..subspace import random_mask, zero_inactive
    torch.manual_seed(seed)
    if shape["kind"] == "conv":
        layer = BayesConv2d(shape["in"], shape["out"], shape["kernel"], shape["stride"], shape["padding"], bias=False)
    else:
        layer = BayesLinear(shape["in"], shape["out"], bias=True)
    layer = layer.to(device)
    with torch.no_grad():
        layer.mask.copy_(random_mask(layer.mask.shape, density, torch.Generator().manual_seed(seed + 7)))
    zero_inactive({"layer": layer})
    return layer


def _block_mask_layer(layer: BayesianLayer, density: float, block: tuple[int, int], seed: int) -> BayesianLayer:
    """Copy of ``layer`` whose mask is whole (bh x bw) blocks of the [C_out, K] matrix at ``density``."""
    from ..subspace import random_mask, zero_inactive
    twin = copy.deepcopy(layer)
    c_out = twin.mask.shape[0]
    k = twin.mask[0].numel()
    blocks = random_mask(torch.Size([c_out // block[0], k // block[1]]), density, torch.Generator().manual_seed(seed))
    mask2d = blocks.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
    with torch.no_grad():
        twin.mask.copy_(mask2d.view_as(twin.mask).to(twin.mask.device))
        # inactive mu and rho were zeroed for the random mask: give newly active entries proper values
        fresh = twin.mask & ~layer.mask
        twin.weight_mu[fresh] = torch.randn(int(fresh.sum()), device=fresh.device) * PosteriorInit().mu_std
        twin.weight_rho[fresh] = layer.weight_rho[layer.mask].mean()
    zero_inactive({"layer": twin})
    return twin


def _pick_block(c_out: int, k: int) -> tuple[int, int] | None:
    for b in (BSR_BLOCK, 2):
        if c_out % b == 0 and k % b == 0:
            return (b, b)
    return None


def _input(shape: dict, batch: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input (requires grad, as for any layer but the first) and a fixed upstream gradient."""
    g = torch.Generator().manual_seed(seed)
    if shape["kind"] == "conv":
        x = torch.randn(batch, shape["in"], shape["hw"], shape["hw"], generator=g)
        ho = (shape["hw"] + 2 * shape["padding"] - shape["kernel"]) // shape["stride"] + 1
        grad = torch.randn(batch, shape["out"], ho, ho, generator=g)
    else:
        x = torch.randn(batch, shape["in"], generator=g)
        grad = torch.randn(batch, shape["out"], generator=g)
    return x.to(device).requires_grad_(), grad.to(device)


def _fwd_bwd(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    x.grad = None
    for p in module.parameters():
        p.grad = None
    out = module(x)
    out.backward(grad)
    return out


def _seeded_run(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, seed: int,
                device: torch.device) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One forward+backward under ``seed``: (seconds, output, input gradient)."""
    torch.manual_seed(seed)
    sync(device)
    start = time.perf_counter()
    out = _fwd_bwd(module, x, grad)
    sync(device)
    elapsed = time.perf_counter() - start
    dx = x.grad.clone()
    x.grad = None
    return elapsed, out.detach(), dx


def kernel_layer(layer: BayesianLayer) -> BayesianLayer:
    """A copy of ``layer`` whose LRT forward takes the project's sparse kernels (sparse_kernel=all)."""
    twin = copy.deepcopy(layer)
    twin.lrt_route = "all"
    return twin


def _active_grads(module: nn.Module, mask2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the active mu and rho entries of a BayesianLayer or a SparseLRTLayer (which stores only them)."""
    if isinstance(module, BayesianLayer):
        c_out = module.weight_mu.shape[0]
        return module.weight_mu.grad.reshape(c_out, -1)[mask2d], module.weight_rho.grad.reshape(c_out, -1)[mask2d]
    return module.mu.grad, module.rho.grad


def _compare(dense: BayesianLayer, dense_run, sparse: nn.Module, sparse_run) -> dict:
    """Max abs (and max relative) differences of output and every gradient, sparse vs dense masked."""
    c_out = dense.weight_mu.shape[0]
    mask2d = dense.mask.reshape(c_out, -1)
    (dense_mu, dense_rho), (sparse_mu, sparse_rho) = _active_grads(dense, mask2d), _active_grads(sparse, mask2d)
    pairs = {
        "output": (dense_run[1], sparse_run[1]), "grad_input": (dense_run[2], sparse_run[2]),
        "grad_mu": (dense_mu, sparse_mu), "grad_rho": (dense_rho, sparse_rho),
    }
    if dense.bias is not None:
        pairs["grad_bias"] = (dense.bias.grad, sparse.bias.grad)
    result = {}
    for name, (a, b) in pairs.items():
        diff = float((a - b).abs().max()) if a.numel() else 0.0
        scale = float(a.abs().max()) if a.numel() else 0.0
        result[f"{name}_max_abs_diff"] = diff
        result[f"{name}_max_rel_diff"] = diff / scale if scale > 0 else diff
    result["max_rel_diff"] = max(v for k, v in result.items() if k.endswith("_rel_diff"))
    return result


def verify_sparse_route(dense: BayesianLayer, sparse: SparseLRTLayer, x: torch.Tensor, grad: torch.Tensor,
                        seed: int = 0, device: torch.device = torch.device("cpu")) -> dict:
    """Run both under the same seed and compare outputs and gradients (active entries for mu/rho)."""
    dense_run = _seeded_run(dense, x, grad, seed, device)
    sparse_run = _seeded_run(sparse, x, grad, seed, device)
    return _compare(dense, dense_run, sparse, sparse_run)


def _storage(module: nn.Module, numel: int) -> dict:
    if isinstance(module, BayesianLayer):  # the kernels' index: one entry per active weight
        active = int(module.mask.sum())
        return {"layout": "kernel index", "blocksize": None, "active": active, "stored_values": active,
                "weight_numel": numel, "stored_fraction": active / numel}
    pat = module.pattern
    return {"layout": pat.layout, "blocksize": list(pat.blocksize) if pat.blocksize else None, "active": pat.nnz,
            "stored_values": pat.stored, "weight_numel": numel, "stored_fraction": pat.stored / numel}


def _inner_calls(seconds: float) -> int:
    """Calls per timing sample so that one sample lasts >= MICRO_MIN_SAMPLE_S."""
    return max(1, math.ceil(MICRO_MIN_SAMPLE_S / max(seconds, 1e-9)))


def benchmark_sparse_routes(width: float, batch: int, image_size: int, device: torch.device, seed: int,
                            densities=MICRO_DENSITIES, routes=MICRO_ROUTES, repeats: int = 2) -> dict:
    """Layer-level microbenchmark: production dense masked LRT layer vs sparse routes, per shape and density."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*beta.*")
        return _benchmark_sparse_routes(width, batch, image_size, device, seed, densities, routes, repeats)


def _benchmark_sparse_routes(width, batch, image_size, device, seed, densities, routes, repeats) -> dict:
    results = []
    shapes = micro_shapes(width, image_size)
    for si, shape in enumerate(shapes):
        log(f"sparse routes: {shape['name']} ({si + 1}/{len(shapes)})")
        x, grad = _input(shape, batch, device, seed)
        entry = {**shape, "batch": batch, "dense": {}, "routes": {}}
        for density in densities:
            dense = _make_layer(shape, density, seed, device)
            c_out, k = dense.weight_mu.shape[0], dense.mask[0].numel()
            block = _pick_block(c_out, k)
            candidates: dict[str, tuple[nn.Module, BayesianLayer]] = {}
            per_route: dict[str, dict] = {}
            for route in routes:
                try:
                    if route == "kernel":
                        candidates[route] = (kernel_layer(dense), dense)
                    elif route == "csr":
                        candidates[route] = (SparseLRTLayer(dense, "csr"), dense)
                    elif block is None:
                        per_route[route] = {"skipped": f"no block size in ({BSR_BLOCK}, 2) divides {c_out}x{k}"}
                    elif route == "bsr":
                        candidates[route] = (SparseLRTLayer(dense, "bsr", block), dense)
                    elif route == "bsr_block":
                        twin = _block_mask_layer(dense, density, block, seed + 11)
                        candidates[route] = (SparseLRTLayer(twin, "bsr", block), twin)
                    else:
                        per_route[route] = {"skipped": f"unknown route {route!r}; known: {', '.join(ALL_ROUTES)}"}
                except Exception as error:  # a route that cannot run is a result too
                    per_route[route] = {"error": f"{type(error).__name__}: {error}"}
            # verification runs (same seed) double as warm-up and calibrate the calls per sample
            verify_seed = seed + 3
            runs: dict[BayesianLayer, tuple] = {}
            runners, first_seconds = {}, {}
            try:
                runs[dense] = _seeded_run(dense, x, grad, verify_seed, device)
                runners["dense"] = (dense, _inner_calls(runs[dense][0]))
                first_seconds["dense"] = runs[dense][0]
                for route, (module, reference_layer) in list(candidates.items()):
                    try:
                        if reference_layer not in runs:
                            runs[reference_layer] = _seeded_run(reference_layer, x, grad, verify_seed, device)
                        sparse_run = _seeded_run(module, x, grad, verify_seed, device)
                        per_route[route] = _compare(reference_layer, runs[reference_layer], module, sparse_run)
                        per_route[route].update(_storage(module, c_out * k))
                        runners[route] = (module, _inner_calls(sparse_run[0]))
                        first_seconds[route] = sparse_run[0]
                    except Exception as error:
                        per_route[route] = {"error": f"{type(error).__name__}: {error}"}
                        del candidates[route]
            finally:
                runs.clear()
            # routes clearly slower than dense (>= MICRO_SLOW_FACTOR in the verification run) are far from
            # the 0.5x target either way: one timed sample each keeps the default run to minutes
            dense_seconds = first_seconds["dense"]
            wanted = {name: (1 if name != "dense" and first_seconds[name] >= MICRO_SLOW_FACTOR * dense_seconds
                             else repeats) for name in runners}
            samples = {name: [] for name in runners}
            names = list(runners)
            for rep in range(max(wanted.values(), default=0)):
                for name in (names if rep % 2 == 0 else names[::-1]):
                    if rep >= wanted[name]:
                        continue
                    module, inner = runners[name]
                    samples[name].append(timed(lambda m=module: _fwd_bwd(m, x, grad), device, inner))
            key = str(density)
            entry["dense"][key] = summarize(samples["dense"], batch)
            entry["dense"][key]["inner_calls_per_sample"] = runners["dense"][1]
            for route in candidates:
                stats = summarize(samples[route], batch)
                stats["inner_calls_per_sample"] = runners[route][1]
                stats["verification_run_s"] = first_seconds[route]
                per_route[route].update(stats)
                per_route[route]["sparse_vs_dense"] = ratio(stats, entry["dense"][key])
            entry["routes"][key] = per_route
            x.grad = None
        results.append(entry)
    return {"densities": list(densities), "routes": list(routes), "repeats": repeats,
            "shapes": results, "summary": _summarize_routes(results, densities, routes)}


def _summarize_routes(results: list[dict], densities, routes) -> dict:
    """Per density and route: the measured sparse/dense ratios over shapes (min, median, max)."""
    summary = {}
    for density in densities:
        key = str(density)
        summary[key] = {}
        for route in routes:
            ratios = {r["name"]: r["routes"][key][route]["sparse_vs_dense"] for r in results
                      if "sparse_vs_dense" in r["routes"][key].get(route, {})}
            if ratios:
                summary[key][route] = {"min": min(ratios.values()), "median": statistics.median(ratios.values()),
                                       "max": max(ratios.values()), "shapes_at_or_below_0.5": sorted(
                                           n for n, v in ratios.items() if v <= 0.5), "per_shape": ratios}
    return summary
