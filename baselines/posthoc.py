"""Post-hoc compression: prune a finished dense VI posterior to the top-d weights by SNR, then fine-tune.

A two-stage method: ``init_from`` names the finished ``dense_vi`` run (same dataset, architecture,
width and seed). Its final posterior is loaded, each sparsified layer keeps the fraction ``density`` of
its weights with the highest SNR = |mu| / sigma, and the survivors are fine-tuned for ``epochs``
epochs with the mask frozen (``epochs: 0`` = pure post-hoc pruning). Training FLOPs include the dense
run's.
"""

import json
from pathlib import Path

import torch

from ssvi.config import ConfigError
from ssvi.methods import Method, register_method
from ssvi.subspace import select_sparse_layers, set_masks, top_score_mask

PRUNING_CRITERION = "snr"
MUST_MATCH = ("dataset", "arch", "width", "image_size", "seed")


@register_method("posthoc")
class PostHoc(Method):
    @classmethod
    def check_config(cls, cfg):
        if not cfg.init_from:
            raise ConfigError("init_from must name the finished dense_vi run directory for method 'posthoc'")

    def source(self) -> Path:
        source = Path(self.cfg.init_from)
        if not (source / "metrics.json").exists():
            raise FileNotFoundError(f"posthoc needs a finished dense_vi run in {source} (no metrics.json there)")
        return source

    def attach(self, model, ctx):
        super().attach(model, ctx)
        self.layers = select_sparse_layers(model, self.layout)
        self.dense_metrics = json.loads((self.source() / "metrics.json").read_text())
        dense_cfg = self.dense_metrics["config"]
        mismatched = [k for k in MUST_MATCH if dense_cfg.get(k) != getattr(self.cfg, k)]
        if dense_cfg["method"] != "dense_vi" or mismatched:
            raise ValueError(f"{self.source()} is not a dense_vi run matching this one (differs in: "
                             f"{', '.join(mismatched) or 'method'})")

    def initialize(self, model):
        state = torch.load(self.source() / "model.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        set_masks(self.layers, {n: top_score_mask(l, self.cfg.density, PRUNING_CRITERION, self.cfg.lam)
                                for n, l in self.layers.items()})
        self.masks_changed()

    def initial_train_flops(self) -> float:
        return float(self.dense_metrics["train_flops"])
