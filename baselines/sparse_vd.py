"""Sparse variational dropout (Molchanov, Ashukha & Vetrov, "Variational Dropout Sparsifies Deep Neural
Networks", ICML 2017), written from the paper: it trains dense and ends sparse, the opposite trade to SSVI's.

- Posterior per weight q(w) = N(theta, alpha * theta^2), in the paper's additive reparameterisation: theta and
  sigma are free parameters (here the suite's Bayesian layers: theta = mu, sigma = softplus(rho)) and
      log alpha = log sigma^2 - log theta^2      (:func:`log_alpha`, clipped to [-10, 10] for numerical safety).
- Prior: log-uniform, p(|w|) proportional to 1 / |w|. Its KL term has no closed form; the paper's
  approximation (eq. 14), with k1 = 0.63576, k2 = 1.87320, k3 = 1.48695:
      -KL(q || p) ~ k1 * sigmoid(k2 + k3 * log alpha) - 0.5 * log(1 + 1 / alpha) - k1      (:func:`neg_kl`)
- Training: the local reparameterization trick (the suite's LRT forward), loss = cross-entropy +
  kl_weight / N_train * warm-up * sum of KL; kl_weight = 1 (the evidence lower bound; ``extra: {kl_weight}``),
  warmed up linearly as in the suite's recipe.
- After training every weight with log alpha > 3 (:data:`THRESHOLD`: alpha > e^3 ~ 20, a dropout rate above
  0.95) is removed: its mask entry, mu and rho become 0. The run's density is what remains, over every conv and
  linear layer (the paper prunes all of them, so the suite's layout options, e.g. a dense first conv, do not
  apply). metrics.json ``sparse_vd`` records the accuracy, NLL and ECE before and after removal, of the
  K-sample predictive and of the mean weights (the paper reports the latter).

Where it differs from the paper: the optimiser, schedule, initial sigma and epochs are the suite's (SGD with
cosine annealing instead of Adam), so that the comparison isolates the posterior; sigma is softplus(rho) as
everywhere in the suite (for the small sigmas of training, rho ~ log sigma = 0.5 log sigma^2, the paper's
parameter up to a factor of 2). The K-sample predictive samples the thresholded posterior; test FLOPs are one
forward at the final density.
"""

import torch
import torch.nn.functional as F

from ssvi.config import ConfigError
from ssvi.evaluate import predict
from ssvi.layers import bayesian_layers
from ssvi.methods import Method, register_method
from ssvi.metrics import classification_metrics
from ssvi.subspace import set_masks, zero_inactive

K1, K2, K3 = 0.63576, 1.87320, 1.48695
THRESHOLD = 3.0           # log alpha above which a weight is removed
LOG_ALPHA_CLIP = 10.0     # log alpha clipped to [-10, 10]
THETA_EPS = 1e-16         # log(theta^2 + eps): finite at theta = 0
KL_WEIGHT = "kl_weight"
REPORTED = ("acc", "nll", "ece")


def log_alpha(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log alpha = log sigma^2 - log theta^2, clipped to [-LOG_ALPHA_CLIP, LOG_ALPHA_CLIP]."""
    return (2 * torch.log(sigma) - torch.log(mu * mu + THETA_EPS)).clamp(-LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)


def neg_kl(log_alpha_: torch.Tensor) -> torch.Tensor:
    """The paper's approximation of -KL(q || log-uniform prior), elementwise (log(1 + 1/alpha) as
    softplus(-log alpha), stable for every alpha)."""
    return K1 * torch.sigmoid(K2 + K3 * log_alpha_) - 0.5 * F.softplus(-log_alpha_) - K1


@register_method("sparse_vd")
class SparseVD(Method):
    extra_keys = frozenset({KL_WEIGHT})

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        weight = cfg.extra.get(KL_WEIGHT, 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f"extra: {KL_WEIGHT}={weight!r} must be a number >= 0")

    def attach(self, model, ctx):
        super().attach(model, ctx)
        self.layers = bayesian_layers(model)  # thresholded at the end; dense (masks all on) while training
        self.threshold_info = None

    @property
    def kl_scale(self) -> float:
        return float(self.cfg.extra.get(KL_WEIGHT, 1.0))

    def kl(self, model):
        """KL to the log-uniform prior, summed over active weights (all of them while training)."""
        return -sum((neg_kl(log_alpha(l.weight_mu, l._sigma_of_last_forward())) * l.mask).sum()
                    for l in bayesian_layers(model).values())

    def finalize(self, run):
        before = self._scores(run)
        with torch.no_grad():
            kept = {n: (log_alpha(l.weight_mu, l.sigma) <= THRESHOLD) & l.mask for n, l in self.layers.items()}
        density_before = self.density()
        set_masks(self.layers, kept)
        zero_inactive(self.layers)
        self.masks_changed()
        self.threshold_info = {"log_alpha_threshold": THRESHOLD, "density_before": density_before,
                               "density_after": self.density(), "before": before, "after": self._scores(run)}

    def _scores(self, run) -> dict:
        """Accuracy, NLL and ECE of the K-sample predictive and of the mean weights on the test set."""
        data, cfg = run.data, run.cfg
        common = dict(mean=data.mean, std=data.std, batch_size=cfg.eval_batch_size, device=run.device)
        predictive = self.predictive_samples(run.model, data.x_test, **common).mean(0)
        mean_weight = predict(run.model, data.x_test, data.y_test, mode="mean", **common)
        return {name: {k: classification_metrics(probs, data.y_test)[k] for k in REPORTED}
                for name, probs in (("predictive", predictive), ("mean_weight", mean_weight))}

    def result_info(self):
        return {**super().result_info(), "kl_weight": self.kl_scale, "prior": "log-uniform (KL: Molchanov et al. eq. 14)",
                "sparse_vd": self.threshold_info}

    def state_dict(self):
        return {**super().state_dict(), "threshold_info": self.threshold_info}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.threshold_info = state.get("threshold_info")
