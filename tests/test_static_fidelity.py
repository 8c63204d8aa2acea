"""static_sparse against the authors' static-topology rules (their ``--static_topo 1``), step by step.

The suite side is the real thing: ``build_run`` and ``train_one_epoch`` of :mod:`ssvi.trainer` with the
``static_sparse`` method. The other side is written here from the rules of the authors' code
(ljb121002/SSVI: ``RigLScheduler`` with ``static_topo``, ``StoConv2d`` / ``StoLinear``, ``train``), re-implemented,
not copied:

- parameters ``weight`` (mu) and ``posterior_std`` (rho) per Bayesian layer; the first one dense, every other
  one (shortcuts and the classifier included) keeps n - int((1 - d) n) entries, the same mask for mu and rho;
  at the start ``w *= mask`` for both, so a masked rho is exactly 0;
- LRT forward ``op(x, mu) + sqrt(op(x^2, softplus(rho)^2 * (rho != 0)) + 1e-8) * eps``, eps drawn with
  ``randn_like`` of the output from the global generator;
- KL = sum of ``kl_divergence(N(mu, softplus(rho)), N(0, prior_std)) * (rho != 0)``, weighted by
  ``kl_scale / N * min(2 epoch / epochs, 1)``; loss = mean CE + that;
- gradients of masked parameters multiplied by the mask (a backward hook); an optimiser step on *every*
  minibatch (``pruner()`` is always True when the topology is static); after each step the momentum buffers and
  then the weights (mu and rho) multiplied by the mask;
- SGD with momentum, two groups chosen by name (``posterior_std``: lr_std, no weight decay; everything else:
  lr, weight decay); CosineAnnealingLR(T_max = epochs) stepped once per epoch;
- prediction: K full weight samples ``mu + eps * softplus(rho) * (rho != 0)`` with BatchNorm in eval mode,
  the softmaxes averaged.

Both sides start from the same unmasked weights and masks, see the same minibatches and the same LRT noise
(the global generator's state is restored before the reference step), in float64. After every step the test
compares the masks and their counts, every parameter, every momentum buffer, the BatchNorm statistics, the
loss and the KL, whether the optimiser stepped and how many random numbers the step drew; per epoch the
learning rates and the KL weight; at the end the K-sample predictive.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

import ssvi.trainer as trainer
from ssvi.batches import iterate_batches
from ssvi.config import RunConfig
from ssvi.data import load_dataset
from ssvi.evaluate import posterior_samples
from ssvi.layers import BayesConv2d, BayesianLayer
from ssvi.trainer import build_run, train_one_epoch

# the step counter below wraps optimizer.step after the lr scheduler was built: its warning is expected
pytestmark = pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")

EPOCHS, BATCH, N_TRAIN, DENSITY, SEED = 3, 32, 200, 0.1, 0
STEPS_PER_EPOCH = math.ceil(N_TRAIN / BATCH)  # 7, the last one a partial batch of 8
# float64 on both sides, both taking the CE of float32 logits as the suite's trainer does: the largest difference
# measured is ~2e-11 of a tensor's scale (144 steps); a rule difference shows at 1e-3 or more
RTOL, ATOL = 1e-6, 1e-12


# --------------------------------------------------------------------------------------------
# The authors' static-topology rules, re-implemented
# --------------------------------------------------------------------------------------------

class AuthorsLayer(nn.Module):
    """A StoConv2d / StoLinear: ``weight`` = mu, ``posterior_std`` = rho, deterministic bias."""

    def __init__(self, layer: BayesianLayer, weight: torch.Tensor, rho: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.is_conv = isinstance(layer, BayesConv2d)
        self.geometry = (layer.stride, layer.padding, layer.dilation, layer.groups) if self.is_conv else None
        self.weight = nn.Parameter(weight.clone())
        self.posterior_std = nn.Parameter(rho.clone())
        self.bias = None if bias is None else nn.Parameter(bias.clone())

    def op(self, x, w, b):
        return F.conv2d(x, w, b, *self.geometry) if self.is_conv else F.linear(x, w, b)

    def forward(self, x):
        mean = self.op(x, self.weight, self.bias)
        variance = F.softplus(self.posterior_std) ** 2 * (self.posterior_std != 0)
        std = torch.sqrt(self.op(x ** 2, variance, None) + 1e-8)
        return mean + std * torch.randn_like(mean)

    def kl(self, prior_std: float) -> torch.Tensor:
        posterior = Normal(self.weight, F.softplus(self.posterior_std))
        prior = Normal(torch.zeros((), dtype=self.weight.dtype), torch.tensor(prior_std, dtype=self.weight.dtype))
        return (kl_divergence(posterior, prior) * (self.posterior_std != 0)).sum()

    @torch.no_grad()
    def sample_(self):  # their bnn_sample, in place
        self.weight += torch.randn_like(self.weight) * F.softplus(self.posterior_std) * (self.posterior_std != 0)


def authors_count(n: int, density: float) -> int:
    return n - int((1 - density) * n)


class AuthorsStatic:
    """The authors' training of a static random topology on a copy of ``template`` (the suite's model before
    its masks are applied): their layers, masks, hooks, optimiser, schedule and KL weight."""

    def __init__(self, template: nn.Module, masks: dict[str, torch.Tensor], cfg: RunConfig, num_train: int):
        self.cfg, self.num_train = cfg, num_train
        self.model = copy.deepcopy(template)
        self.layers: dict[str, AuthorsLayer] = {}
        for name, module in list(self.model.named_modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, BayesianLayer):
                    full = f"{name}.{child_name}" if name else child_name
                    twin = AuthorsLayer(child, child.weight_mu.detach(), child.weight_rho.detach(),
                                        None if child.bias is None else child.bias.detach())
                    setattr(module, child_name, twin)
                    self.layers[full] = twin
        self.layers = {n: self.layers[n] for n, m in self.model.named_modules() if n in self.layers}  # forward order
        # uniform sparsity: the first Bayesian layer dense, every other one sparse (classifier included)
        names = list(self.layers)
        self.sparse = {}
        for name in names[1:]:
            layer = self.layers[name]
            n = layer.weight.numel()
            mask = masks[name]
            assert mask.shape == layer.weight.shape and int(mask.sum()) == authors_count(n, cfg.density), name
            self.sparse[name] = mask.to(layer.weight.dtype)
        self.initial_counts = {n: int(m.sum()) for n, m in self.sparse.items()}
        with torch.no_grad():
            for name, mask in self.sparse.items():  # random_sparsify: w *= mask, for mu and for rho
                self.layers[name].weight.mul_(mask)
                self.layers[name].posterior_std.mul_(mask)
        for name, mask in self.sparse.items():  # the backward hook: masked gradients
            for p in (self.layers[name].weight, self.layers[name].posterior_std):
                p.register_hook(lambda grad, m=mask: grad * m)
        named = list(self.model.named_parameters())
        self.optimizer = torch.optim.SGD(
            [{"params": [p for n, p in named if not n.endswith("posterior_std")], "weight_decay": cfg.weight_decay,
              "lr": cfg.lr},
             {"params": [p for n, p in named if n.endswith("posterior_std")], "weight_decay": 0.0,
              "lr": cfg.lr_rho}], momentum=cfg.momentum)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs)
        self.epoch, self.steps_taken = 0, 0

    def kl_weight(self) -> float:
        return self.cfg.kl_scale / self.num_train * min(2 * self.epoch / self.cfg.epochs, 1)

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        self.model.train()
        self.optimizer.zero_grad()
        logits = self.model(inputs.double())
        kl = sum(layer.kl(self.cfg.prior_std) for layer in self.layers.values())
        # the CE of float32 logits, as the suite's trainer takes it (numerics of the harness, not a rule)
        loss = F.cross_entropy(logits.float(), labels) + kl * self.kl_weight()
        loss.backward()
        static_topology_steps = True  # pruner() with static_topo: True on every minibatch
        if static_topology_steps:
            self.optimizer.step()
            self.steps_taken += 1
            with torch.no_grad():
                for name, mask in self.sparse.items():  # reset_momentum, then apply_mask_to_weights
                    for p in (self.layers[name].weight, self.layers[name].posterior_std):
                        buf = self.optimizer.state[p].get("momentum_buffer")
                        if buf is not None:
                            buf.mul_(mask)
                for name, mask in self.sparse.items():
                    self.layers[name].weight.mul_(mask)
                    self.layers[name].posterior_std.mul_(mask)
        return loss.item(), kl.item()

    @torch.no_grad()
    def predictive(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        probs = []
        for _ in range(num_samples):
            sample = copy.deepcopy(self.model)
            for module in sample.modules():
                if isinstance(module, AuthorsLayer):
                    module.sample_()
                    module.forward = lambda z, m=module: m.op(z, m.weight, m.bias)  # test_with_mean
            sample.eval()
            probs.append(sample(x).softmax(1))
        return torch.stack(probs).mean(0)


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------

SUITE_NAMES = {"weight_mu": "weight", "weight_rho": "posterior_std"}


def authors_name(name: str) -> str:
    module, _, leaf = name.rpartition(".")
    return f"{module}.{SUITE_NAMES.get(leaf, leaf)}" if module else SUITE_NAMES.get(leaf, leaf)


WORST = {"error": 0.0}


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to rounding: the largest difference within RTOL of the tensor's largest magnitude (+ ATOL)."""
    error = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    WORST["error"] = max(WORST["error"], error / (scale + ATOL))
    return error <= RTOL * scale + ATOL


def first_difference(run, ref: AuthorsStatic, where: str) -> str | None:
    """The first quantity that differs (masks, then every parameter, buffer and momentum buffer), or None."""
    for name, layer in run.method.layers.items():
        mask = ref.sparse.get(name)
        if mask is None:
            return f"{where}: layer {name} is sparse in the suite, dense under the authors' rules"
        if not torch.equal(layer.mask, mask.bool()):
            return f"{where}: mask of {name} differs"
        if layer.num_active() != ref.initial_counts[name]:
            return f"{where}: {name} keeps {layer.num_active()} weights, the authors' count is {ref.initial_counts[name]}"
    if set(ref.sparse) != set(run.method.layers):
        return f"{where}: sparse layers differ: suite {sorted(run.method.layers)}, authors {sorted(ref.sparse)}"
    ref_params = dict(ref.model.named_parameters())
    ref_buffers = dict(ref.model.named_buffers())
    for name, p in run.model.named_parameters():
        q = ref_params[authors_name(name)]
        for what, a, b in (("value", p, q),
                           ("momentum buffer", run.optimizer.state.get(p, {}).get("momentum_buffer"),
                            ref.optimizer.state.get(q, {}).get("momentum_buffer"))):
            if (a is None) != (b is None):
                return f"{where}: {name} {what}: suite {'absent' if a is None else 'present'}, authors' " \
                       f"{'absent' if b is None else 'present'}"
            if a is not None and not close(a.detach(), b.detach()):
                i = int((a.detach() - b.detach()).abs().flatten().argmax())
                return (f"{where}: {name} {what} differs at flat index {i}: suite {a.detach().flatten()[i].item():.10g}, "
                        f"authors' rule {b.detach().flatten()[i].item():.10g}")
    for name, buf in run.model.named_buffers():
        if name.endswith(".mask") or name.endswith("sampled_weight"):
            continue
        if buf.is_floating_point() and not close(buf, ref_buffers[name]):
            return f"{where}: buffer {name} differs"
        if not buf.is_floating_point() and not torch.equal(buf, ref_buffers[name]):
            return f"{where}: buffer {name} differs"
    return None


def _digits_subset():
    d = load_dataset("digits", "data", download=False, image_size=8)
    three = lambda x: x.repeat(1, 3, 1, 1).contiguous()  # noqa: E731  (the authors' stem takes 3 channels)
    return dataclasses.replace(d, x_train=three(d.x_train[:N_TRAIN]), y_train=d.y_train[:N_TRAIN],
                               x_test=three(d.x_test[:60]), y_test=d.y_test[:60], mean=d.mean * 3, std=d.std * 3)


def _build(**values):
    cfg = RunConfig.from_dict({"method": "static_sparse", "dataset": "digits", "arch": "resnet18", "width": 0.125,
                               "image_size": 8, "epochs": EPOCHS, "batch_size": BATCH, "density": DENSITY,
                               "seed": SEED, "threads": 1, "device": "cpu", "num_samples": 3, **values})
    run = build_run(cfg, data=_digits_subset())
    run.model.double()  # in place: the optimiser keeps the same parameter objects
    template = copy.deepcopy(run.model)  # unmasked initial weights
    run.cast = run.model.register_forward_pre_hook(lambda module, args: (args[0].double(),))
    run.method.initialize(run.model)
    masks = {n: l.mask.clone() for n, l in run.method.layers.items()}
    ref = AuthorsStatic(template, masks, cfg, len(run.data.y_train))
    return run, ref


def lockstep(monkeypatch, run, ref: AuthorsStatic) -> list[dict]:
    """Train ``run`` with the suite's trainer and ``ref`` with the authors' rules side by side; raises
    AssertionError naming the first quantity that differs. Returns one record per step."""
    records = []
    stepped = []
    original_step = run.optimizer.step

    def counting_step(*args, **kwargs):
        stepped.append(run.step)
        return original_step(*args, **kwargs)

    run.optimizer.step = counting_step
    original_train_step = trainer.train_step

    def train_step(run_, inputs, labels, beta):
        before = torch.get_rng_state()
        loss, ce, kl = original_train_step(run_, inputs, labels, beta)
        after = torch.get_rng_state()
        torch.set_rng_state(before)  # the same LRT noise for the authors' step
        ref_loss, ref_kl = ref.step(inputs, labels)
        where = f"step {run_.step} (epoch {ref.epoch})"
        assert torch.equal(torch.get_rng_state(), after), f"{where}: the two steps drew different random numbers"
        assert beta == pytest.approx(ref.kl_weight(), rel=1e-12), f"{where}: KL weight {beta} vs {ref.kl_weight()}"
        assert kl.item() == pytest.approx(ref_kl, rel=RTOL), f"{where}: KL {kl.item()} vs authors' {ref_kl}"
        assert loss.item() == pytest.approx(ref_loss, rel=RTOL), f"{where}: loss {loss.item()} vs authors' {ref_loss}"
        assert stepped[-1:] == [run_.step] and ref.steps_taken == run_.step, f"{where}: the optimiser did not step"
        difference = first_difference(run_, ref, where)
        assert difference is None, difference
        records.append({"step": run_.step, "loss": loss.item(), "kl": kl.item(), "beta": beta})
        return loss, ce, kl

    monkeypatch.setattr(trainer, "train_step", train_step)
    difference = first_difference(run, ref, "at the start")
    assert difference is None, difference
    for _ in range(run.cfg.epochs):
        ref.epoch = run.epoch + 1
        lrs = [g["lr"] for g in ref.optimizer.param_groups]
        assert [g["lr"] for g in run.optimizer.param_groups] == pytest.approx(lrs, rel=1e-12), f"lr of epoch {ref.epoch}"
        row = train_one_epoch(run)
        run.epoch += 1
        ref.scheduler.step()
        assert row["lr"] == pytest.approx(lrs[0], rel=1e-12) and row["kl_weight"] == pytest.approx(ref.kl_weight())
    assert stepped == list(range(1, run.step + 1))  # an optimiser step on every minibatch, no other
    return records


def test_static_sparse_follows_the_authors_static_topology_rules_step_by_step(monkeypatch):
    run, ref = _build()
    records = lockstep(monkeypatch, run, ref)
    assert len(records) == EPOCHS * STEPS_PER_EPOCH == run.step
    # the schedule was exercised: the KL weight warmed up, the lr decayed, the masks stayed at the authors' count
    assert records[0]["beta"] < records[-1]["beta"]
    assert [g["lr"] for g in run.optimizer.param_groups] == pytest.approx([0.0, 0.0], abs=1e-15)
    for name, layer in run.method.layers.items():
        assert layer.num_active() == authors_count(layer.mask.numel(), DENSITY)
        assert (layer.weight_mu[~layer.mask] == 0).all() and (layer.weight_rho[~layer.mask] == 0).all()
    # the K-sample predictive of the final posterior, from the same weight noise (float32, as both evaluate)
    run.cast.remove()
    run.model.float()
    ref.model.float()
    x = torch.cat([x for x, _ in iterate_batches(run.data.x_test, run.data.y_test, 500, mean=run.data.mean,
                                                 std=run.data.std, shuffle=False, augment=False, generator=None)])
    ours = posterior_samples(run.model, run.data.x_test, run.data.y_test, mean=run.data.mean, std=run.data.std,
                             num_samples=3, generator=torch.Generator().manual_seed(123)).mean(0)
    torch.manual_seed(123)
    theirs = ref.predictive(x, 3)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sabotage", ["masked_state", "rho_init", "lr_rho", "kl_warmup", "skipped_step"])
def test_the_lockstep_comparison_catches_a_deviation(monkeypatch, sabotage):
    """The comparison is not vacuous: one planted deviation from the authors' rules fails it, named."""
    import ssvi.methods as methods
    run, ref = _build(**({"lr_rho": 0.02} if sabotage == "lr_rho" else {}))
    if sabotage == "masked_state":  # neither gradients nor momentum masked: masked entries' momentum grows
        monkeypatch.setattr(methods, "mask_gradients", lambda layers: None)
        monkeypatch.setattr(methods, "mask_momentum", lambda optimizer, layers: None)
    elif sabotage == "rho_init":  # masked rho left at a non-zero value
        with torch.no_grad():
            for layer in run.method.layers.values():
                layer.weight_rho.masked_fill_(~layer.mask, -7.0)
    elif sabotage == "lr_rho":  # rho's own learning rate differs from the authors' lr_std
        ref.optimizer.param_groups[1]["lr"] = ref.scheduler.base_lrs[1] = 0.01
    elif sabotage == "kl_warmup":  # no KL warm-up
        monkeypatch.setattr(trainer, "kl_weight", lambda cfg, epoch, n, kl_scale=None: cfg.kl_scale / n)
    else:  # a mask update in place of step 3's optimiser step (the static topology steps on every minibatch)
        monkeypatch.setattr(run.method, "update_steps", lambda delta_t: (3,))
    with pytest.raises(AssertionError, match=r"(step \d+ \(epoch \d\)|at the start|lr of epoch)"):
        lockstep(monkeypatch, run, ref)
