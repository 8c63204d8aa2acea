"""Static sparse VI: SSVI with its random initial mask frozen (the "no subspace update" ablation)."""

from ssvi.methods import SSVI, Method, register_method


@register_method("static_sparse")
class StaticSparse(SSVI):
    mask_schedule = None  # it makes no updates by design: no minimum to check

    def update_steps(self, delta_t):
        return ()

    # never a dense-gradient step: 3 * f_S per step, the base Method's count
    train_flops_per_example = Method.train_flops_per_example
