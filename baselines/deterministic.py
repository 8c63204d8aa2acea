"""Dense deterministic network: SSVI's recipe (optimiser, schedule, epochs, batch, augmentation) with point
weights and no masks: no sigma, no KL term, one product per layer in training, one forward pass per prediction.

The dense point estimate that last-layer Laplace (``laplace`` at density 1) fits; the sparse one is
``deterministic_sparse``.
"""

from ssvi.methods import POINT, Method, register_method


@register_method("deterministic")
class Deterministic(Method):
    posterior = POINT
