"""IVON (Shen et al., "Variational Learning is Effective for Large Deep Networks", ICML 2024) through the
authors' optimiser, ``ivon-opt`` (``import ivon``): mean-field VI at about the cost of SGD / Adam.

The posterior lives in the optimiser's state: a mean (the model's weights) and a per-parameter Hessian
estimate h, giving sigma = 1 / sqrt(ess * (h + weight_decay)) for every parameter the optimiser holds (conv
and linear weights, biases, BatchNorm). Each training step draws one weight sample from it
(``sampled_params(train=True)``), takes the gradient of the cross-entropy there and lets IVON update mean and
Hessian; no KL term is added (the effective sample size and the weight decay are the prior's part). A
prediction averages the softmax of K (= num_samples) weight samples drawn by ``sampled_params()``, each
fixed across the whole test set and drawn from the run's seeded evaluation stream.

Recipe: the authors' CIFAR image-classification script (ivon-experiments, image_classification/train_ivon.sh)
where it differs from SSVI's: lr 0.2 (``extra: {ivon_lr}``), Hessian initialisation h0 = 0.1
(``hess_init``), effective sample size = the number of training examples (``ess``, default N_train),
beta1 = 0.9 (the run's ``momentum``), beta2 = 0.99999 (``beta2``), weight decay 2e-4 (``ivon_weight_decay``),
one training sample per step; the clip radius is the library's default (none). Epochs, batch size and the
cosine schedule are the suite's (the authors trained 200 epochs at batch 50). The run options lr, lr_rho,
weight_decay and kl_scale are SGD's and the Gaussian posterior's: IVON does not read them.

Sparse mask (density < 1, as in the paper config's "IVON on a sparse mask at 0.1"): a random static mask at
density d in the suite's layout (first conv dense), as static sparse VI's; inactive weights are zeroed in
every sample and their gradients are masked before IVON reads them, so they stay exactly 0.

Costs: a training step is one forward and backward at the point-weight cost (one product per layer, 3 f_S
per example) plus IVON's elementwise work per parameter (:data:`ELEMENTWISE_FLOPS`, counted per step);
resuming restores IVON's whole state (mean, momentum, Hessian and its step counter). The final model file
keeps the mean; the Hessian (active entries only for masked layers) is stored beside it as the posterior.
"""

import contextlib
import math

import torch

from ssvi.config import ConfigError
from ssvi.evaluate import predict, seeded_global_rng
from ssvi.layers import bayesian_layers, variational_parameter_groups
from ssvi.methods import OPTIMIZER, Method, register_method
from ssvi.subspace import mask_gradients, random_mask, select_sparse_layers, set_masks, zero_inactive

RECIPE = {"ivon_lr": 0.2, "hess_init": 0.1, "ess": None, "beta2": 0.99999, "ivon_weight_decay": 2e-4}
# per parameter and step, beyond SGD's update: the sample (1 / sqrt(ess (h + wd)): 4, mu + noise: 1), the
# gradient-times-noise Hessian estimate (2) and the Hessian update (~10), the preconditioned step (~6)
ELEMENTWISE_FLOPS = 23


def standard_init(model) -> None:
    """The architecture's own initialisation of every conv and linear weight (PyTorch's default,
    ``reset_parameters``: Kaiming-uniform with a = sqrt(5)), as in the IVON authors' experiments, instead of
    SSVI's mu ~ N(0, 0.01^2), whose weights would be far smaller than IVON's initial posterior noise."""
    with torch.no_grad():
        for layer in bayesian_layers(model).values():
            torch.nn.init.kaiming_uniform_(layer.weight_mu, a=math.sqrt(5))


@register_method("ivon")
class IVONMethod(Method):
    posterior = OPTIMIZER
    extra_keys = frozenset(RECIPE)
    required_packages = ("ivon",)

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        for key, value in cfg.extra.items():
            if value is None and key == "ess":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"extra: {key}={value!r} must be a positive number")
        if not cfg.extra.get("beta2", RECIPE["beta2"]) < 1:
            raise ConfigError("extra: beta2 must be below 1")

    def recipe(self) -> dict:
        values = {**RECIPE, **self.cfg.extra}
        values["ess"] = float(values["ess"] or self.ctx.num_train)
        return {**values, "beta1": self.cfg.momentum, "train_samples": 1}

    def attach(self, model, ctx):
        super().attach(model, ctx)
        self.layers = select_sparse_layers(model, self.layout) if self.cfg.density < 1 else {}

    def initialize(self, model):
        standard_init(model)
        if self.layers:
            set_masks(self.layers, {n: random_mask(l.mask.shape, self.cfg.density, self.ctx.generator)
                                    for n, l in self.layers.items()})
            self.masks_changed()

    def build_optimizer(self, model):
        return self._make_optimizer(model, self.recipe()["ess"])

    def _make_optimizer(self, model, ess: float):
        """IVON over every trained parameter: mu, biases and BatchNorm (rho is no part of this posterior)."""
        import ivon  # only IVON runs pay for the import
        mu_and_deterministic, rho = variational_parameter_groups(model)
        for p in rho:
            p.requires_grad_(False)
        recipe = {**RECIPE, **self.cfg.extra}
        self.optimizer = ivon.IVON(mu_and_deterministic, lr=recipe["ivon_lr"], ess=ess, hess_init=recipe["hess_init"],
                                   beta1=self.cfg.momentum, beta2=recipe["beta2"],
                                   weight_decay=recipe["ivon_weight_decay"], mc_samples=1)
        return self.optimizer

    def training_sample(self):
        return self._sample(train=True)

    @contextlib.contextmanager
    def _sample(self, train: bool):
        """IVON's weight sample, with the mask's inactive weights at 0 and, in training, their gradients masked
        before IVON collects them (on leaving its context)."""
        with self.optimizer.sampled_params(train=train):
            zero_inactive(self.layers)
            yield
            if train:
                mask_gradients(self.layers)

    def step(self, step, optimizer):
        optimizer.step()
        zero_inactive(self.layers)
        return False

    def optimizer_flops_per_step(self, step):
        return ELEMENTWISE_FLOPS * self.optimizer._numel

    def predictive_samples(self, model, x, *, mean, std, batch_size, device):
        y = torch.zeros(len(x), dtype=torch.long)
        samples = []
        with seeded_global_rng(self.cfg.seed, device):
            for _ in range(self.cfg.num_samples):
                with self._sample(train=False):
                    samples.append(predict(model, x, y, mean=mean, std=std, batch_size=batch_size, mode="mean",
                                           device=device))
        return torch.stack(samples)

    # ---- state: resuming (the checkpoint holds the optimiser's state dict) and the final posterior -----------
    def state_dict(self):
        return {**super().state_dict(), "ivon_step": self.optimizer.current_step}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if hasattr(self, "optimizer"):
            self.optimizer.current_step = state["ivon_step"]

    def posterior_state(self):
        """IVON's Hessian per parameter (only the active entries of a masked layer) and its hyperparameters."""
        masks = {id(layer.weight_mu): layer.mask for layer in self.layers.values()}
        hessians, offset = [], 0
        group = self.optimizer.param_groups[0]
        for p in group["params"]:
            h = group["hess"][offset:offset + p.numel()].view(p.shape)
            hessians.append(h[masks[id(p)]].clone() if id(p) in masks else h.clone())
            offset += p.numel()
        return {"hess": hessians, "ess": group["ess"], "weight_decay": group["weight_decay"],
                "hess_init": group["hess_init"], "step": self.optimizer.current_step}

    def load_posterior_state(self, state):
        if not state:
            return
        masks = {id(layer.weight_mu): layer.mask for layer in self.layers.values()}
        group = self.optimizer.param_groups[0]
        full = []
        for p, h in zip(group["params"], state["hess"]):
            if id(p) in masks:  # inactive entries: the initial value (never read: their weights are 0 in every sample)
                dense = torch.full(p.shape, group["hess_init"], dtype=h.dtype, device=h.device)
                dense[masks[id(p)]] = h
                h = dense
            full.append(h.reshape(-1))
        group["hess"] = torch.cat(full).to(group["hess"])
        self.optimizer.current_step = state["step"]

    def restore_posterior(self, model, final_state, device):
        self.layers = select_sparse_layers(model, self.layout) if self.cfg.density < 1 else {}
        self._make_optimizer(model, final_state["posterior"]["ess"])
        super().restore_posterior(model, final_state, device)

    def result_info(self):
        return {**super().result_info(), "recipe": self.recipe(), "optimizer": "ivon.IVON (ivon-opt)",
                "hessian_mean": float(self.optimizer.param_groups[0]["hess"].mean())}
