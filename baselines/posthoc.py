"""Post-hoc compression: prune a finished dense VI posterior to the top-d weights by SNR, then fine-tune.

A two-stage method: ``init_from`` names the finished ``dense_vi`` run (same dataset, architecture,
width, image size and seed). Its final posterior is loaded, each sparsified layer keeps the fraction
``density`` of its weights with the highest SNR = |mu| / sigma, and the survivors are fine-tuned for
``epochs`` epochs with the mask frozen (``epochs: 0`` = pure post-hoc pruning). Training FLOPs include
the dense run's.
"""

import json
from pathlib import Path

import torch

from ssvi.config import ConfigError
from ssvi.methods import Method, register_method
from ssvi.subspace import select_sparse_layers, set_masks, top_score_mask
from ssvi.rundir import FINAL_MODEL, METRICS

PRUNING_CRITERION = "snr"
MUST_MATCH = ("dataset", "arch", "width", "image_size", "seed")


@register_method("posthoc")
class PostHoc(Method):
    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        if not cfg.init_from:
            raise ConfigError("init_from must name the finished dense_vi run directory for method 'posthoc'")

    def source(self) -> Path:
        return Path(self.cfg.init_from)

    def attach(self, model, ctx):
        super().attach(model, ctx)
        self.layers = select_sparse_layers(model, self.layout)
        source, same = self.source(), ", ".join(MUST_MATCH)
        missing = [name for name in (METRICS, FINAL_MODEL) if not (source / name).is_file()]
        if missing:
            raise ConfigError(f"init_from={source} holds no finished dense_vi run (no {' or '.join(missing)} there); "
                              f"finish that run first (python -m ssvi train --out {source} --set method=dense_vi, "
                              f"same {same} as this run) or point init_from at a finished one")
        self.dense_metrics = json.loads((source / METRICS).read_text())
        dense_cfg = self.dense_metrics["config"]
        differences = [f"method: {dense_cfg['method']!r} there"] if dense_cfg["method"] != "dense_vi" else []
        differences += [f"{k}: {dense_cfg.get(k)!r} there, {getattr(self.cfg, k)!r} here"
                        for k in MUST_MATCH if dense_cfg.get(k) != getattr(self.cfg, k)]
        if differences:
            raise ConfigError(f"init_from={source} is not a dense_vi run matching this one ({'; '.join(differences)}); "
                              f"point init_from at the finished dense_vi run with the same {same}")

    def initialize(self, model):
        state = torch.load(self.source() / FINAL_MODEL, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        set_masks(self.layers, {n: top_score_mask(l, self.cfg.density, PRUNING_CRITERION, self.cfg.lam)
                                for n, l in self.layers.items()})
        self.masks_changed()

    def initial_train_flops(self) -> float:
        return float(self.dense_metrics["train_flops"])
