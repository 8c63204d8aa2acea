"""Post-hoc compression: prune a finished dense VI posterior to the top-d weights by SNR, fine-tune, repair BatchNorm.

A two-stage method: ``init_from`` names the finished ``dense_vi`` run (same dataset, architecture,
width, image size and seed). Its final posterior is loaded (compact or legacy file alike), each sparsified
layer keeps the fraction ``density`` of its weights with the highest SNR = |mu| / sigma, and the survivors
are fine-tuned for ``epochs`` epochs with the mask frozen (``epochs: 0`` = pure post-hoc pruning).

Then, the standard repair: the BatchNorm running statistics, which still describe the dense network, are
re-estimated on the training data with the pruned posterior (:mod:`ssvi.batchnorm`: one epoch of training
batches in the LRT forward mode, cumulative average, no gradient step); its forward passes are counted in
the training FLOPs (LRT training forward at the final densities, per example). ``extra: {bn_reestimation:
false}`` is the old recipe without the repair (a named variant, for comparison). Training FLOPs include the
dense run's.
"""

from pathlib import Path

import torch

from ssvi.batchnorm import reestimate_batchnorm
from ssvi.config import ConfigError
from ssvi.methods import Method, register_method
from ssvi.rundir import check_finished, load_final, recorded_train_time
from ssvi.subspace import select_sparse_layers, set_masks, top_score_mask

PRUNING_CRITERION = "snr"
MUST_MATCH = ("dataset", "arch", "width", "image_size", "seed")
BN_REESTIMATION = "bn_reestimation"
BN_SEED_OFFSET = 104_729  # the re-estimation pass's batches come from their own seeded stream


@register_method("posthoc")
class PostHoc(Method):
    init_from_run = True
    extra_keys = frozenset({BN_REESTIMATION})

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        if not cfg.init_from:
            raise ConfigError("init_from must name the finished dense_vi run directory for method 'posthoc'")
        if not isinstance(cfg.extra.get(BN_REESTIMATION, True), bool):
            raise ConfigError(f"extra: {BN_REESTIMATION}={cfg.extra[BN_REESTIMATION]!r} must be true or false")

    @property
    def removal_criterion(self) -> str:
        return PRUNING_CRITERION

    @property
    def repairs_batchnorm(self) -> bool:
        return self.cfg.extra.get(BN_REESTIMATION, True)

    def source(self) -> Path:
        return Path(self.cfg.init_from)

    def attach(self, model, ctx):
        super().attach(model, ctx)
        self.layers = select_sparse_layers(model, self.layout)
        self.bn_info = None
        source, same = self.source(), ", ".join(MUST_MATCH)
        if not (source / "metrics.json").is_file():
            raise ConfigError(f"init_from={source} holds no finished dense_vi run (no metrics.json there); "
                              f"finish that run first (python -m ssvi train --out {source} --set method=dense_vi, "
                              f"same {same} as this run) or point init_from at a finished one")
        self.dense_metrics = check_finished(source)
        dense_cfg = self.dense_metrics["config"]
        differences = [f"method: {dense_cfg['method']!r} there"] if dense_cfg["method"] != "dense_vi" else []
        differences += [f"{k}: {dense_cfg.get(k)!r} there, {getattr(self.cfg, k)!r} here"
                        for k in MUST_MATCH if dense_cfg.get(k) != getattr(self.cfg, k)]
        if differences:
            raise ConfigError(f"init_from={source} is not a dense_vi run matching this one ({'; '.join(differences)}); "
                              f"point init_from at the finished dense_vi run with the same {same}")

    def initialize(self, model):
        state, _ = load_final(self.source(), map_location="cpu")
        model.load_state_dict(state)
        set_masks(self.layers, {n: top_score_mask(l, self.cfg.density, PRUNING_CRITERION, self.cfg.lam)
                                for n, l in self.layers.items()})
        self.masks_changed()

    def finalize(self, run):
        if not self.repairs_batchnorm:
            return
        generator = torch.Generator().manual_seed(self.cfg.seed + BN_SEED_OFFSET)
        self.bn_info = reestimate_batchnorm(run.model, run.data, batch_size=self.cfg.batch_size, generator=generator,
                                            mode=self.forward_mode, device=run.device)
        flops = self.ctx.profile.training_forward(self.densities(), self.forward_products) * self.bn_info["examples"]
        self.bn_info["train_flops"] = flops
        run.train_flops += flops

    def result_info(self) -> dict:
        return {**super().result_info(),
                "bn_reestimation": self.bn_info if self.repairs_batchnorm else "off (extra: bn_reestimation: false)"}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "bn_info": self.bn_info}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.bn_info = state.get("bn_info")

    def initial_train_flops(self) -> float:
        return float(self.dense_metrics["train_flops"])

    def initial_train_time(self) -> float:
        return recorded_train_time(self.dense_metrics)
