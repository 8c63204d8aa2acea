"""Dense mean-field VI: every weight Bayesian and active (density 1), the paper's dense baseline."""

from ssvi.methods import Method, register_method


@register_method("dense_vi")
class DenseVI(Method):
    """The base Method is already dense: no sparse layers, a plain optimiser step, 3 * f_D FLOPs per step."""
