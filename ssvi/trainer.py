"""The training loop shared by SSVI and every baseline, with resumable checkpoints.

    python -m ssvi train --config run.yaml --out results/runs/demo     # or ssvi.trainer.run(cfg, out)

Recipe (reference section 2): SGD with momentum and two parameter groups (mu + BatchNorm + biases with
weight decay; rho with its own lr and none), cosine lr stepped per epoch, and per minibatch
    loss = mean cross-entropy + kl_scale / N_train * min(2 * epoch / epochs, 1) * KL,  epoch from 1
(the KL weight passes through the method's ``kl_weight`` hook; its ``extra_loss`` term is added).
After ``backward()`` the method's ``step`` hook either takes the (masked) optimiser step or, on a
subspace-update step, replaces it. What a step computes follows the method's declared posterior
(:mod:`ssvi.posterior`): a Gaussian one trains with the LRT and the KL term; every other kind trains its mean
weights only (the layers' mean forward mode, loss = cross-entropy, rho not optimised), within the method's
``training_sample`` context (IVON: a weight sample of its posterior) and with its optimiser (``build_optimizer``).

Resumability (the run directory's files, checkpoints, lock and integrity checks: :mod:`ssvi.rundir`): an
atomic checkpoint at every epoch end holds the model (with masks), optimiser, lr schedule, method state,
step, FLOPs so far, history and every RNG state; the data order of epoch e is drawn from a generator seeded
by (seed, e). Running the same command again resumes from it. After the last epoch the method's
``finalize`` hook runs (post-hoc's BatchNorm repair), the posterior is evaluated and the result files are
written (:mod:`ssvi.results`); the checkpoint is then deleted. A finished run whose result files are whole
is not redone; one whose ``metrics.json`` is gone but whose final model is kept is re-evaluated from it.

One process per run directory (``run.lock``, re-entered by ``train --evaluate``'s evaluation). A run
directory whose recorded config differs from the requested one is refused before anything is written, or,
with ``restart_on_config_change``, deleted and started afresh. A run whose loss or weights become
non-finite stops with a :class:`DivergedError` and keeps no checkpoint. A full disk, Ctrl-C and SIGTERM stop
it with one line saying where it stopped and what re-running resumes from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from . import flops
from .config import DEVICE_FORM, ConfigError, RunConfig
from .batches import iterate_batches
from .data import Dataset, load_dataset
from .errors import Interrupted, Terminated, UserError, signal_of
from .evaluate import predict
from .files import DiskFullError, write_text
from .layers import PosteriorInit, set_mode
from .methods import Method, TrainContext, create_method
from .models import create_model
from .rundir import (CHECKPOINT, FINAL_MODEL, METRICS, RESOLVED_CONFIG, attach_log_file, check_finished,
                     check_same_run, load_final, make_run_directory, read_checkpoint, resume_point,
                     run_directory_lock, save_checkpoint, set_rng_state, write_progress)
from .scalars import scalar_writer
from .sparse_lrt import check_sparse_kernel_device, set_lrt_route

log = logging.getLogger("ssvi")

class DivergedError(UserError, RuntimeError):
    """The loss, weights or predictions became non-finite."""


# --------------------------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------------------------

def memory_format(cfg: RunConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def check_memory_format(cfg: RunConfig, device: torch.device) -> None:
    """Refuse channels-last on a CPU, for every model.

    With torch 2.14.1, PyTorch's CPU channels-last convolution backward gives silently wrong weight
    gradients for some shapes, depending on the CPU: 1x1 stride-2 convolutions with 2-7 input channels
    here, the 3-input-channel stem on an AVX-512 Xeon. On CPUs channels-last is slower anyway (0.62x).
    """
    if cfg.channels_last and device.type == "cpu":
        raise ConfigError("channels_last=True is for GPUs: on a CPU it is slower and PyTorch's CPU channels-last "
                          "convolution gives wrong weight gradients for some shapes; set channels_last: false "
                          "or run on a GPU")


def mixed_precision(cfg: RunConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast region of a training step's forward pass (the layers keep their variance path fp32)."""
    if cfg.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_device(name: str) -> torch.device:
    if not DEVICE_FORM.fullmatch(name):
        raise ConfigError(f"device={name!r} is not allowed; allowed: auto, cpu, cuda, cuda:N (N = 0, 1, ...)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for but CUDA is not available on this machine; "
                          "use --set device=cpu (or device: auto), or run on a GPU node")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device={name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
                          "pick one of them or device: cuda")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Data order and augmentation of one epoch depend only on (seed, epoch): resuming needs no loader state."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def kl_weight(cfg: RunConfig, epoch: int, num_train: int, kl_scale: float | None = None) -> float:
    """The KL term's weight in epoch ``epoch`` (from 1): ``kl_scale`` (default: the run option) / N_train, warmed
    up linearly to full weight at mid-training."""
    return (cfg.kl_scale if kl_scale is None else kl_scale) / num_train * min(2 * epoch / cfg.epochs, 1.0)


@dataclass
class Run:
    """Everything a run holds while it trains."""

    cfg: RunConfig
    data: Dataset
    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR
    device: torch.device
    steps_per_epoch: int
    epoch: int = 0            # completed epochs
    step: int = 0             # completed optimiser steps (subspace updates included)
    train_flops: float = 0.0  # this run's training FLOPs so far
    wall_time: float = 0.0    # training seconds so far, over all resumptions
    history: list | None = None
    test_samples: torch.Tensor | None = None  # the evaluated predictive's K x N x C test probabilities (fp32)


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for everything a command computes (the run config's ``threads``, when set)."""
    if threads:
        torch.set_num_threads(threads)


def build_run(cfg: RunConfig, data: Dataset | None = None) -> Run:
    """Everything a run needs, freshly initialised; ``data`` replaces the config's dataset (benchmarks)."""
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    check_memory_format(cfg, device)
    check_sparse_kernel_device(device, cfg.sparse_kernel)
    seed_everything(cfg.seed)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, image_size=cfg.image_size)
    if cfg.data_on_device:
        data = dataclasses.replace(data, x_train=data.x_train.to(device), y_train=data.y_train.to(device))
    init = PosteriorInit(cfg.mu_init_std, cfg.sigma_init, cfg.sigma_init_std)
    model = create_model(cfg.arch, data.num_classes, cfg.width, data.in_channels, bayesian=True, init=init)
    model = model.to(device, memory_format=memory_format(cfg))
    method = create_method(cfg)
    steps_per_epoch = math.ceil(len(data.y_train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    ctx = TrainContext(total_steps=total_steps, t_end=int(cfg.t_end_frac * total_steps),
                       profile=flops.profile_model(model, (data.in_channels, data.image_size, data.image_size)),
                       generator=torch.Generator().manual_seed(cfg.seed), num_train=len(data.y_train))
    method.attach(model, ctx)
    optimizer = method.build_optimizer(model)  # SGD with the recipe's two groups, or the method's own (IVON)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1), eta_min=0.0)
    return Run(cfg, data, model, method, optimizer, scheduler, device, steps_per_epoch, history=[])


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

def progress(text: str) -> None:
    """One rewritten status line, only when a person is watching a terminal."""
    if sys.stderr.isatty():
        sys.stderr.write("\r" + text[:120].ljust(120))
        sys.stderr.flush()


def train_one_epoch(run: Run) -> dict:
    cfg, model, data = run.cfg, run.model, run.data
    epoch = run.epoch + 1
    beta = run.method.kl_weight(kl_weight(cfg, epoch, len(data.y_train), run.method.kl_scale), epoch)  # the hook
    model.train()
    set_mode(model, run.method.forward_mode)
    sums = torch.zeros(3, dtype=torch.float64, device=run.device)  # loss, ce, kl (summed over examples)
    seen = 0
    batches = iterate_batches(data.x_train, data.y_train, cfg.batch_size, mean=data.mean, std=data.std,
                              shuffle=True, augment=data.augment, generator=epoch_generator(cfg.seed, epoch),
                              device=run.device)
    for i, (inputs, labels) in enumerate(batches, start=1):
        loss, ce, kl = train_step(run, inputs, labels, beta)
        sums += torch.stack([loss, ce, kl]).double() * len(labels)
        seen += len(labels)
        if sys.stderr.isatty():  # loss.item() syncs a GPU: only when someone watches
            progress(f"epoch {epoch}/{cfg.epochs} step {i}/{run.steps_per_epoch} loss {loss.item():.4f}")
    loss_mean, ce_mean, kl_mean = (sums / seen).tolist()
    if not math.isfinite(loss_mean):
        raise diverged(cfg, f"in epoch {epoch}: the loss became non-finite ({loss_mean})")
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    return {"epoch": epoch, "loss": loss_mean, "ce": ce_mean, "kl": kl_mean, "kl_weight": beta, "lr": lr}


def train_step(run: Run, inputs: torch.Tensor, labels: torch.Tensor, beta: float) -> tuple[torch.Tensor, ...]:
    """One optimiser step (the method's mask update included) on one batch; (loss, ce, kl), detached."""
    cfg, model = run.cfg, run.model
    run.step += 1
    # the sparse kernels give no dense gradient of mu: steps that need it take the dense path
    dense = cfg.sparse_kernel == "none" or run.method.needs_dense_gradient(run.step)
    set_lrt_route(run.method.layers, "dense" if dense else cfg.sparse_kernel)
    run.optimizer.zero_grad(set_to_none=True)
    with run.method.training_sample():  # IVON: the step's forward and backward at one posterior sample
        with mixed_precision(cfg, run.device):
            logits = model(inputs.contiguous(memory_format=memory_format(cfg)))
        ce = F.cross_entropy(logits.float(), labels)
        if run.method.posterior_kind().variational:
            kl = run.method.kl(model)
            loss = ce + beta * kl
        else:
            kl, loss = torch.zeros((), device=ce.device), ce  # no sigma, no KL term
        extra = run.method.extra_loss(logits.float(), labels)  # the method's hook: a term added to the loss, or None
        loss = loss if extra is None else loss + extra
        loss.backward()
    run.method.step(run.step, run.optimizer)
    run.train_flops += (run.method.train_flops_per_example(run.step) * len(labels)
                        + run.method.optimizer_flops_per_step(run.step))
    return loss.detach(), ce.detach(), kl.detach()


def diverged(cfg: RunConfig, what: str) -> DivergedError:
    return DivergedError(f"training diverged {what} (lr={cfg.lr}, kl_scale={cfg.kl_scale}, "
                         f"sigma_init={cfg.sigma_init}); lower lr or kl_scale (or sigma_init)")


def check_finite_state(run: Run) -> None:
    """The loss of the epoch's last step comes before its update: check what the update left (one sync)."""
    floats = {name: t for name, t in run.model.state_dict().items() if t.is_floating_point()}
    finite = torch.stack([torch.isfinite(t).all() for t in floats.values()]).tolist()
    bad = [name for name, ok in zip(floats, finite) if not ok]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise diverged(run.cfg, f"in epoch {run.epoch}: non-finite weights in {shown}")


def test_accuracy(run: Run) -> float:
    probs = predict(run.model, run.data.x_test, run.data.y_test, mean=run.data.mean, std=run.data.std,
                    batch_size=run.cfg.eval_batch_size, mode="mean", device=run.device)
    return float((probs.argmax(1) == run.data.y_test).float().mean())




# --------------------------------------------------------------------------------------------
# checkpoints: the training state
# --------------------------------------------------------------------------------------------

def run_state(run: Run) -> dict:
    """What a checkpoint holds besides the RNG states (ssvi.rundir.save_checkpoint adds those)."""
    return {"config": run.cfg.to_dict(), "epoch": run.epoch, "step": run.step, "train_flops": run.train_flops,
            "wall_time": run.wall_time, "history": run.history, "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "method": run.method.state_dict()}


def load_checkpoint(run: Run, path: Path) -> None:
    state = read_checkpoint(path, run.device)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.method.load_state_dict(state["method"])
    run.epoch, run.step, run.train_flops = state["epoch"], state["step"], state["train_flops"]
    run.wall_time, run.history = state["wall_time"], state["history"]
    set_rng_state(state["rng"])


# --------------------------------------------------------------------------------------------
# one run into a run directory
# --------------------------------------------------------------------------------------------

@dataclass
class Position:
    """Where a run is, for the one line a full disk or an interruption prints."""
    text: str = "before training started"


def run(cfg: RunConfig, out: str | Path, restart_on_config_change: bool = False, evaluated: list | None = None) -> dict:
    """Train and evaluate one run into ``out``; resume or skip if ``out`` already holds it. ``evaluated``, when
    given, receives the live :class:`Run` evaluated in this process (the OOD / shift evaluation of ``train
    --evaluate`` goes on from it instead of reloading the run from disk).

    A run recorded in ``out`` with another config raises RunConflictError, or is deleted and started
    afresh with ``restart_on_config_change``. A finished run whose result files are damaged raises
    DamagedRunError naming the file and what to delete."""
    out = Path(out)
    make_run_directory(out)
    with run_directory_lock(out, "ssvi train"):
        handler = attach_log_file(out)
        position = Position()
        try:
            check_same_run(cfg, out, restart_on_config_change)
            if (out / METRICS).exists():
                result = check_finished(out)
                log.info("run in %s is already trained and evaluated (%s whole); not training it again", out, METRICS)
                return result
            log.info("ssvi train: started (pid %d) in %s", os.getpid(), out)
            return _train_and_evaluate(cfg, out, position, evaluated)
        except DivergedError as error:
            (out / CHECKPOINT).unlink(missing_ok=True)
            raise DivergedError(f"{error} and run again: no checkpoint was kept, since resuming it would "
                                "diverge the same way") from error
        except DiskFullError as error:
            raise error.advise(f"the run resumes from {resume_point(out)}") from None
        except (KeyboardInterrupt, Terminated) as error:
            signum = signal_of(error)
            raise Interrupted(f"interrupted by {_signal_name(signum)} {position.text} of {out}; re-run the same "
                              f"command to resume from {resume_point(out)}", signum) from None
        finally:
            log.removeHandler(handler)
            handler.close()


def _signal_name(signum: int) -> str:
    import signal
    return signal.Signals(signum).name


def _train_and_evaluate(cfg: RunConfig, out: Path, position: Position, evaluated: list | None = None) -> dict:
    from .results import evaluate_posterior, restore_final, write_results
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if not (out / RESOLVED_CONFIG).is_file() or (out / RESOLVED_CONFIG).read_text() != text:
        write_text(out / RESOLVED_CONFIG, text)
    run_ = build_run(cfg)
    checkpoint = out / CHECKPOINT
    final_model = None
    if (out / FINAL_MODEL).is_file():  # training finished earlier; its results were lost or never written
        restore_final(run_, *load_final(out, run_.device))
        final_model = out / FINAL_MODEL
        log.info("re-evaluating %s from its final model (training finished at epoch %d)", out, run_.epoch)
    else:
        if checkpoint.exists():
            load_checkpoint(run_, checkpoint)
            log.info("resumed %s from epoch %d (step %d)", out, run_.epoch, run_.step)
        else:
            run_.method.initialize(run_.model)
        _train(run_, out, position)
        position.text = "while finishing the run (after the last epoch)"
        run_.method.finalize(run_)
    position.text = "while evaluating the trained posterior"
    write_progress(out, phase="evaluating", epoch=run_.epoch, epochs=cfg.epochs)
    metrics, predictions = evaluate_posterior(run_)
    position.text = "while writing the result files"
    result = write_results(run_, out, metrics, predictions, kept_final_model=final_model)
    checkpoint.unlink(missing_ok=True)  # the final model holds everything a re-evaluation needs
    write_progress(out, phase="finished", epoch=run_.epoch, epochs=cfg.epochs)
    if evaluated is not None:
        evaluated.append(run_)
    log.info("finished: acc %.4f  nll %.4f  ece %.4f  ace %.4f  ece_ssvi %.4f  brier %.4f  train %.3g FLOPs  -> %s",
             result["acc"], result["nll"], result["ece"], result["ace"], result["ece_ssvi"], result["brier"],
             result["train_flops"], out / METRICS)
    return result


def _train(run_: Run, out: Path, position: Position) -> None:
    """The epochs left to train, with a checkpoint, a progress note and a log line (and scalars) per epoch."""
    cfg = run_.cfg
    log.info("%s on %s/%s width %g density %.3f seed %d: %d epochs x %d steps on %s", cfg.method, cfg.dataset,
             cfg.arch, cfg.width, run_.method.density(), cfg.seed, cfg.epochs, run_.steps_per_epoch, run_.device)
    write_progress(out, phase="training", epoch=run_.epoch, epochs=cfg.epochs)
    with scalar_writer(cfg, out, run_.epoch) as write_scalars:
        while run_.epoch < cfg.epochs:
            position.text = f"in epoch {run_.epoch + 1} of {cfg.epochs}"
            started = time.perf_counter()
            row = train_one_epoch(run_)
            run_.epoch += 1
            check_finite_state(run_)
            row.update(test_acc=test_accuracy(run_), density=run_.method.density(), train_flops=run_.train_flops,
                       seconds=time.perf_counter() - started)
            run_.wall_time += row["seconds"]
            run_.history.append(row)
            progress("")
            log.info("epoch %3d/%d  loss %.4f  ce %.4f  kl %.4g  lr %.5f  test_acc(mean) %.4f  density %.4f  %.1fs",
                     row["epoch"], cfg.epochs, row["loss"], row["ce"], row["kl"], row["lr"], row["test_acc"],
                     row["density"], row["seconds"])
            position.text = f"after epoch {run_.epoch} of {cfg.epochs}, while writing its checkpoint"
            save_checkpoint(out / CHECKPOINT, run_state(run_))
            write_scalars(row)
            write_progress(out, phase="training", epoch=run_.epoch, epochs=cfg.epochs, loss=row["loss"],
                           test_acc=row["test_acc"], seconds_per_epoch=run_.wall_time / len(run_.history))
