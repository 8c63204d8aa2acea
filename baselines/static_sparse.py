"""Static sparse VI: SSVI with its random initial mask frozen (the "no subspace update" ablation)."""

from ssvi import flops
from ssvi.methods import SSVI, register_method


@register_method("static_sparse")
class StaticSparse(SSVI):
    mask_schedule = None  # it makes no updates by design: no minimum to check

    def update_steps(self, delta_t):
        return ()

    def train_flops_per_example(self, step: int) -> float:
        return flops.sparse_step(self.ctx.profile, self.densities())  # never needs a dense gradient
