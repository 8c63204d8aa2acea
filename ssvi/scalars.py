"""Live curves for long runs: the per-epoch scalars of a run as TensorBoard event files (run option
``tensorboard``), as the authors' code logs them. Needs the ``tensorboard`` package (``pip install tensorboard``).

    with scalar_writer(cfg, out, resumed_epoch) as write:
        write(row)       # one epoch's history row: loss, ce, kl, lr, test_acc, density, seconds

    tensorboard --logdir results/runs              # then, e.g., the whole grid's curves side by side
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .config import ConfigError, RunConfig
from .rundir import TENSORBOARD

SCALARS = ("loss", "ce", "kl", "lr", "test_acc", "density", "seconds")


@contextlib.contextmanager
def scalar_writer(cfg: RunConfig, out: Path, epoch: int):
    """``write(row)``: the epoch's scalars as TensorBoard events in ``out/tensorboard`` (run option
    ``tensorboard``); a no-op otherwise. On a resumption, events after the resumed epoch are purged."""
    if not cfg.tensorboard:
        yield lambda row: None
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard: true needs the tensorboard package (pip install tensorboard), or set "
                          "tensorboard: false") from None
    writer = SummaryWriter(str(out / TENSORBOARD), purge_step=epoch + 1 if epoch else None)

    def write(row: dict) -> None:
        for key in SCALARS:
            writer.add_scalar(f"train/{key}", row[key], row["epoch"])
        writer.flush()

    try:
        yield write
    finally:
        writer.close()
