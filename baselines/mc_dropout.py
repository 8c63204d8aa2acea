"""MC dropout (Gal & Ghahramani, ICML 2016): a point network trained with dropout, predicting with dropout on.

Dropout (rate ``extra: {dropout_rate: p}``, default 0.1) acts on the input of every conv and linear layer but
the first, i.e. after every weight layer, as in Gal & Ghahramani's Bayesian CNNs; the rest is SSVI's recipe
(SGD, cosine schedule, weight decay 5e-4 = the Gaussian prior), with point weights: no sigma, no KL term, one
product per layer in training. A prediction averages the softmax of K (= num_samples) forward passes, each
with fresh dropout masks drawn from the run's seeded evaluation stream (every evaluation of the run sees the
same masks); the mean-weight prediction is the network without dropout (weight scaling).

Where it differs from the paper: Gal & Ghahramani used p = 0.5 for LeNet; with BatchNorm ResNets and VGGs
the uncertainty literature uses smaller rates, and 0.1 is the default here (recorded in metrics.json).
The model is the suite's Bayesian architecture with its layers in the mean-weight mode; dropout is added by
forward pre-hooks, so the stored model and its compact file are the point network's.
"""

import torch
import torch.nn.functional as F

from ssvi.config import ConfigError
from ssvi.evaluate import predict, seeded_global_rng
from ssvi.layers import bayesian_layers
from ssvi.methods import DROPOUT, Method, register_method

DROPOUT_RATE = "dropout_rate"
DEFAULT_RATE = 0.1


@register_method("mc_dropout")
class MCDropout(Method):
    posterior = DROPOUT
    extra_keys = frozenset({DROPOUT_RATE})

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        rate = cfg.extra.get(DROPOUT_RATE, DEFAULT_RATE)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
            raise ConfigError(f"extra: {DROPOUT_RATE}={rate!r} must be a number in (0, 1)")

    @property
    def rate(self) -> float:
        return float(self.cfg.extra.get(DROPOUT_RATE, DEFAULT_RATE))

    def attach(self, model, ctx):
        super().attach(model, ctx)
        self.add_dropout(model)

    def add_dropout(self, model) -> None:
        """Dropout on the input of every Bayesian layer but the first: on in training and while sampling."""
        self.sampling = False
        for layer in list(bayesian_layers(model).values())[1:]:
            layer.register_forward_pre_hook(self._dropout)

    def _dropout(self, layer, inputs):
        if layer.training or self.sampling:
            return (F.dropout(inputs[0], self.rate, training=True), *inputs[1:])
        return None

    def predictive_samples(self, model, x, *, mean, std, batch_size, device):
        y = torch.zeros(len(x), dtype=torch.long)
        self.sampling = True
        try:
            with seeded_global_rng(self.cfg.seed, device):
                return torch.stack([predict(model, x, y, mean=mean, std=std, batch_size=batch_size, mode="mean",
                                            device=device) for _ in range(self.cfg.num_samples)])
        finally:
            self.sampling = False

    def restore_posterior(self, model, final_state, device):
        super().restore_posterior(model, final_state, device)
        self.add_dropout(model)

    def result_info(self):
        return {**super().result_info(), "dropout_rate": self.rate,
                "dropout_layers": "input of every conv / linear layer but the first"}
