"""Gradual-pruning BNN: start dense, prune to the target density on the Zhu & Gupta (2017) cubic schedule.

Every ``delta_t`` steps (and at ``t_end``) the sparsity of every sparsified layer is raised to
    s_t = s_f + (s_0 - s_f) * (1 - t / t_end)^3,   s_0 = 0, s_f = 1 - density,
keeping the active weights with the highest removal-criterion score (default: the SSVI default), so the
run ends at exactly the target density by ``t_end`` (75% of training) and trains sparse afterwards.

The schedule is PyTorch's own ``CubicSL.sparsity_compute_fn``. The ``CubicSL`` scheduler object itself
is not used: it drives a ``BaseSparsifier``'s per-tensor parametrizations, whereas here one mask is
shared by mu and rho and ranked by a criterion of both.
"""

from torch.ao.pruning.scheduler.cubic_scheduler import CubicSL

from ssvi.methods import Method, register_method
from ssvi.subspace import mask_momentum, select_sparse_layers, set_masks, top_score_mask


def scheduled_density(step: int, t_end: int, delta_t: int, target_density: float) -> float:
    if step >= t_end:  # exactly the target (1 - (1 - d) can differ from d in the last bit)
        return target_density
    sparsity = CubicSL.sparsity_compute_fn(s_0=0.0, s_f=1.0 - target_density, t=min(step, t_end), t_0=0,
                                           dt=delta_t, n=max(t_end, 1) / delta_t)
    return 1.0 - sparsity


@register_method("gradual_pruning")
class GradualPruning(Method):
    mask_schedule = "pruning steps"

    def attach(self, model, ctx):
        super().attach(model, ctx)
        self.layers = select_sparse_layers(model, self.layout)  # masks start all-ones: dense
        self.pruning_steps = frozenset(self.update_steps(self.cfg.delta_t))

    def update_steps(self, delta_t):
        """Every multiple of delta_t up to t_end, and t_end itself (where the target density is reached)."""
        t_end = self.ctx.t_end
        return sorted({*range(delta_t, t_end + 1, delta_t), *([t_end] if t_end >= 1 else [])})

    def prunes_at(self, step: int) -> bool:
        return step in self.pruning_steps

    def step(self, step, optimizer):
        self.masked_optimizer_step(optimizer)
        if self.prunes_at(step):
            density = scheduled_density(step, self.ctx.t_end, self.cfg.delta_t, self.cfg.density)
            set_masks(self.layers, {n: top_score_mask(l, density, self.removal_criterion, self.cfg.lam)
                                    for n, l in self.layers.items()})
            mask_momentum(optimizer, self.layers)
            self.masks_changed()
            self.records.append({"step": step, "density": self.density()})
        return False

