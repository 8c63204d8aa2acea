"""Deterministic sparse network (RigL-style dynamic sparse training): SSVI's recipe without the posterior.

The cheap alternative a sparse BNN has to beat: the same architecture, recipe (optimiser, learning-rate
schedule, epochs, batch, augmentation) and subspace schedule as SSVI (random initial masks at density d,
every delta_t steps until t_end a removal-and-addition update of alpha/2 (1 + cos(pi t / t_end)) of the active
weights: removal by weight magnitude |w|, regrowth by gradient magnitude |dL/dw|, regrown weights start at
0), but point weights: no sigma, no KL term (loss = cross-entropy), one product per layer in training (half
the LRT's FLOPs in the Bayesian layers) and one forward pass per prediction. Its probabilities are reported
raw and, like every run's, after temperature scaling fitted on points that are not scored with it
(:mod:`ssvi.temperature`: two-fold cross-fitting on halves of the test set).

It is the worked example of a method with a different posterior: the class declares ``posterior = "point"``
and the trainer, the FLOPs count and the evaluation follow that declaration. The Bayesian layers keep their
rho, which this method never reads or trains.
"""

from ssvi.methods import POINT, SSVI, register_method

MAGNITUDE = "mean"  # the criterion |mu|: for point weights, the weight magnitude


@register_method("deterministic_sparse")
class DeterministicSparse(SSVI):
    posterior = POINT

    @property
    def removal_criterion(self) -> str:
        return MAGNITUDE
