"""Last-layer Laplace (Daxberger et al., "Laplace Redux", NeurIPS 2021) through the maintained library,
``laplace-torch`` (``import laplace``), on a finished point estimate: no retraining.

A two-stage method like post-hoc compression: ``init_from`` names a finished point-estimate run with the
same dataset, architecture, width, image size and seed: ``deterministic_sparse`` at this run's density, or
the dense ``deterministic`` network at density 1. Its final weights are loaded and, with ``epochs: 0``, the
run trains nothing. ``finalize`` then fits, with the library and its defaults unless said here:

- ``Laplace(net, "classification", subset_of_weights="last_layer", hessian_structure="kron")``: a Gaussian
  over the classifier's weights and bias with a Kronecker-factored generalised Gauss-Newton posterior
  precision, centred on the trained (MAP) weights; ``net`` is the point network with its last layer as an
  ``nn.Linear`` (the source's sparse classifier keeps its zeros in the mean; the Kronecker factors cover
  every weight of the layer, as the library's do);
- ``fit`` on the training set in order, without augmentation, normalised as in training;
- ``optimize_prior_precision(method="marglik")``: a scalar prior precision by maximising the Laplace
  marginal likelihood (the library's 100 Adam steps at lr 0.1 from 1.0), the Laplace Redux recipe.

Predictive: **sampling**, K = num_samples draws of the linearised (GLM) predictive
(``predictive_samples(x, pred_type="glm", n_samples=K, generator=...)``), exact for a last layer, whose logits
are linear in its weights; every evaluation draws them from the run's seeded evaluation generator.
metrics.json also records the probit approximation's accuracy, NLL and ECE (``laplace.probit``), the
library's default for ``la(x)``, for comparison.

Costs: the run's training FLOPs are its source's plus the fit's and the marginal-likelihood optimisation's,
counted with ``FlopCounterMode`` on the library's own calls: ``fit`` on the first training batch, scaled to
the training set, and one step of the optimisation (log marginal likelihood and its gradient) times its 100
steps; the real fit runs uncounted, since the counter slows every operation it sees. The network's forward
passes are re-priced at the suite's sparse convention (f_S per example) and an eigendecomposition counts as
9 n^3 (Golub & Van Loan's count for a symmetric n x n matrix with its eigenvectors). Its training time is the
source's plus the fit's. A prediction's FLOPs are one counted prediction of one example (a forward at f_S
plus the GLM predictive's variance).
"""

import copy
import math
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ssvi.batches import iterate_batches
from ssvi.config import ConfigError
from ssvi.evaluate import EVAL_SEED_OFFSET
from ssvi.layers import BayesLinear, bayesian_layers, set_mode
from ssvi.methods import FITTED, Method, register_method
from ssvi.metrics import classification_metrics
from ssvi.rundir import check_finished, load_final, recorded_train_time
from ssvi.subspace import select_sparse_layers

SOURCES = {"deterministic_sparse": "at this run's density", "deterministic": "at density 1"}
MUST_MATCH = ("dataset", "arch", "width", "image_size", "seed", "dense_first_layer", "sparse_shortcuts",
              "sparse_classifier")
EIGH_FLOPS_PER_N3 = 9
MARGLIK_STEPS = 100  # the library's default number of Adam steps on the log prior precision


def map_network(model: nn.Module) -> tuple[nn.Module, str]:
    """A copy of the point network for laplace-torch: Bayesian layers at their mean weights, the last one an
    ``nn.Linear`` holding them; with the name of that last layer."""
    net = copy.deepcopy(model).eval()
    set_mode(net, "mean")
    name, last = list(bayesian_layers(net).items())[-1]
    if not isinstance(last, BayesLinear):
        raise ConfigError(f"laplace needs a linear last layer; {name} is a {type(last).__name__}")
    linear = nn.Linear(last.in_features, last.out_features, bias=last.bias is not None).to(last.weight_mu)
    with torch.no_grad():
        linear.weight.copy_(last.weight_mu)
        if last.bias is not None:
            linear.bias.copy_(last.bias)
    net.set_submodule(name, linear)
    return net, name


class TrainingBatches:
    """The training set in order, normalised, not augmented, as laplace-torch's ``fit`` iterates a DataLoader
    (it reads ``len(loader.dataset)`` for N)."""

    def __init__(self, data, batch_size: int, device):
        self.data, self.batch_size, self.device, self.dataset = data, batch_size, device, data.y_train

    def __iter__(self):
        d = self.data
        return iter(iterate_batches(d.x_train, d.y_train, self.batch_size, mean=d.mean, std=d.std, shuffle=False,
                                    augment=False, generator=None, device=self.device))


def counted_flops(fn, densities: dict[str, float]) -> float:
    """FLOPs of ``fn()`` by FlopCounterMode, eigendecompositions included (9 n^3 each), with the work of each
    sparsified layer (module name ending in a key of ``densities``) re-priced at its density: the suite's
    convention, which counts a masked layer's products at their active fraction."""
    from torch.utils.flop_counter import FlopCounterMode

    def eigh(a_shape, *args, **kwargs):
        return EIGH_FLOPS_PER_N3 * a_shape[-1] ** 3 * math.prod(a_shape[:-2])

    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten._linalg_eigh: eigh}) as counter:
        fn()
    counts = counter.get_flop_counts()
    total = float(counter.get_total_flops())
    for name, density in densities.items():
        total -= (1 - density) * sum(sum(counts[key].values()) for key in counts if key.endswith("." + name))
    return total


def evaluation_generator(seed: int, device) -> torch.Generator:
    """The run's evaluation generator on the device laplace-torch samples on."""
    return torch.Generator(device=torch.device(device)).manual_seed(seed + EVAL_SEED_OFFSET)


@register_method("laplace")
class LastLayerLaplace(Method):
    init_from_run = True
    posterior = FITTED
    required_packages = ("laplace",)

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        if not cfg.init_from:
            raise ConfigError("init_from must name the finished point-estimate run (deterministic_sparse at this "
                              "density, or deterministic at density 1) for method 'laplace'")
        if cfg.epochs != 0:
            raise ConfigError(f"epochs={cfg.epochs}: method 'laplace' fits a finished network and trains nothing; "
                              "set epochs: 0")

    def source(self) -> Path:
        return Path(self.cfg.init_from)

    def attach(self, model, ctx):
        super().attach(model, ctx)
        self.layers = select_sparse_layers(model, self.layout)
        self.la, self.fit_info = None, None
        source = self.source()
        if not (source / "metrics.json").is_file():
            raise ConfigError(f"init_from={source} holds no finished run (no metrics.json there); finish the "
                              "point-estimate run first or point init_from at a finished one")
        self.source_metrics = check_finished(source)
        cfg = self.source_metrics["config"]
        expected = "deterministic" if self.cfg.density == 1 else "deterministic_sparse"
        differences = ([f"method: {cfg['method']!r} there, {expected!r} needed ({SOURCES[expected]})"]
                       if cfg["method"] != expected else [])
        if cfg["method"] == "deterministic_sparse" and cfg["density"] != self.cfg.density:
            differences.append(f"density: {cfg['density']!r} there, {self.cfg.density!r} here")
        differences += [f"{k}: {cfg.get(k)!r} there, {getattr(self.cfg, k)!r} here"
                        for k in MUST_MATCH if cfg.get(k) != getattr(self.cfg, k)]
        if differences:
            raise ConfigError(f"init_from={source} is not the point-estimate run this Laplace run fits "
                              f"({'; '.join(differences)}); point init_from at the matching {expected} run")

    def initialize(self, model):
        state, _ = load_final(self.source(), map_location="cpu")
        model.load_state_dict(state)
        self.masks_changed()

    def _laplace(self, model):
        from laplace import Laplace  # a heavy import: only Laplace runs pay for it
        net, last = map_network(model)
        self.last_layer = last
        return Laplace(net, "classification", subset_of_weights="last_layer", hessian_structure="kron",
                       last_layer_name=last)

    def finalize(self, run):
        started = time.perf_counter()
        data = run.data
        self.la = self._laplace(run.model)
        self.la.fit(TrainingBatches(data, self.cfg.batch_size, run.device))
        with warnings.catch_warnings():  # the library reminds that link_approx defaults to probit
            warnings.simplefilter("ignore", UserWarning)
            self.la.optimize_prior_precision(method="marglik", pred_type="glm", link_approx="probit",
                                             n_steps=MARGLIK_STEPS)
        seconds = time.perf_counter() - started
        run.wall_time += seconds
        marglik_flops = MARGLIK_STEPS * counted_flops(self._marglik_step, self.densities())
        fit_flops = self._fit_flops(run) + marglik_flops
        run.train_flops += fit_flops
        prediction = counted_flops(lambda: self._samples(data.x_test[:1], data.mean, data.std, 1, run.device),
                                   self.densities())
        self.fit_info = {"train_flops": fit_flops, "marglik_flops": marglik_flops, "seconds": seconds,
                         "examples": len(data.y_train), "prior_precision": float(self.la.prior_precision),
                         "prediction_flops": prediction, "probit": self._probit_scores(run)}

    def _marglik_step(self) -> None:
        """One step's work of the prior precision's optimisation: the log marginal likelihood and its gradient."""
        log_prior_precision = self.la.prior_precision.detach().log().requires_grad_()
        self.la.log_marginal_likelihood(prior_precision=log_prior_precision.exp()).backward()

    def _fit_flops(self, run) -> float:
        """FLOPs of ``fit`` over the training set: a fit on its first batch, counted (FlopCounterMode slows every
        operation, so the real fit runs without it), scaled to every example."""
        batches = TrainingBatches(run.data, self.cfg.batch_size, run.device)
        first = next(iter(batches))
        replica = self._laplace(run.model)
        one_batch = type("OneBatch", (), {"dataset": batches.dataset, "__iter__": lambda _: iter([first])})()
        return counted_flops(lambda: replica.fit(one_batch), self.densities()) * len(batches.dataset) / len(first[1])

    def _samples(self, x, mean, std, batch_size, device) -> torch.Tensor:
        generator = evaluation_generator(self.cfg.seed, device)
        y = torch.zeros(len(x), dtype=torch.long)
        return torch.cat([self.la.predictive_samples(inputs, pred_type="glm", n_samples=self.cfg.num_samples,
                                                     generator=generator).detach()
                          for inputs, _ in iterate_batches(x, y, batch_size, mean=mean, std=std, shuffle=False,
                                                           augment=False, generator=None, device=device)],
                         dim=1).float().cpu()

    def predictive_samples(self, model, x, *, mean, std, batch_size, device):
        return self._samples(x, mean, std, batch_size, device)

    def _probit_scores(self, run) -> dict:
        d = run.data
        probs = torch.cat([self.la(inputs, pred_type="glm", link_approx="probit").detach().float().cpu()
                           for inputs, _ in iterate_batches(d.x_test, d.y_test, self.cfg.eval_batch_size, mean=d.mean,
                                                            std=d.std, shuffle=False, augment=False, generator=None,
                                                            device=run.device)])
        return {k: classification_metrics(probs, d.y_test)[k] for k in ("acc", "nll", "ece")}

    def prediction_flops(self):
        return self.fit_info["prediction_flops"]

    def initial_train_flops(self):
        return float(self.source_metrics["train_flops"])

    def initial_train_time(self):
        return recorded_train_time(self.source_metrics)

    # ---- the fitted posterior: stored with the final model, restored for a re-evaluation -------------------
    def posterior_state(self):
        """The library's own state dict (Kronecker factors, MAP mean, prior precision, ...), its likelihood enum
        left out (the run is a classification)."""
        return {k: v for k, v in self.la.state_dict().items() if k != "likelihood"}

    def load_posterior_state(self, state):
        if not state:
            return
        self.la = self._laplace(self.model)
        self.la.load_state_dict({**state, "likelihood": self.la.likelihood})

    def state_dict(self):
        return {**super().state_dict(), "fit_info": self.fit_info}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.fit_info = state.get("fit_info")

    def result_info(self):
        return {**super().result_info(), "source": str(self.source()), "source_method": self.source_metrics["method"],
                "laplace": {**self.fit_info, "library": "laplace-torch", "subset_of_weights": "last_layer",
                            "hessian_structure": "kron (GGN)", "prior_precision_by": "marglik",
                            "predictive": f"GLM, sampled (K = {self.cfg.num_samples})"}}
