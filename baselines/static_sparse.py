"""Static sparse VI: SSVI with its random initial mask frozen (the "no subspace update" ablation)."""

from ssvi.methods import SSVI, register_method


@register_method("static_sparse")
class StaticSparse(SSVI):
    def updates_subspace(self, step: int) -> bool:
        return False
