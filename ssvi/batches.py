"""Minibatch iteration with tensor-level augmentation, reproducible from an explicit generator.

:func:`iterate_batches` shuffles, augments (random crop with zero padding 4 and random horizontal flip, as
``RandomCrop(32, padding=4) + RandomHorizontalFlip``) and normalises, drawing every random number of an
epoch up front from an explicit ``torch.Generator`` (:func:`draw_epoch_plan`); it never touches the global
RNGs. Given the same generator state it yields exactly the same batches on every device, so a run resumes
bit for bit from the generator's seed.

    g = torch.Generator().manual_seed(0)
    for x, y in iterate_batches(ds.x_train, ds.y_train, 128, mean=ds.mean, std=ds.std,
                                shuffle=True, augment=ds.augment, generator=g):
        ...
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Augmentation: RandomCrop(size, padding=4) + RandomHorizontalFlip(p=0.5).
CROP_PADDING = 4
FLIP_PROBABILITY = 0.5


@dataclass(frozen=True)
class EpochPlan:
    """Every random number of one epoch, drawn up front: the sample order, and per position in that
    order a crop offset (row, column) and a flip decision (``None`` without augmentation)."""

    order: torch.Tensor                  # int64, n
    crop_offsets: torch.Tensor | None    # int64, 2 x n, each in 0..2*padding
    flips: torch.Tensor | None           # bool, n

    def to(self, device: torch.device | str) -> "EpochPlan":
        # One copy per epoch: per-batch copies of freshly drawn host tensors would each wait for the
        # GPU (a pageable host-to-device copy synchronises the stream).
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)
        return EpochPlan(move(self.order), move(self.crop_offsets), move(self.flips))


def draw_epoch_plan(n: int, *, shuffle: bool, augment: bool, generator: torch.Generator | None,
                    padding: int = CROP_PADDING, flip_probability: float = FLIP_PROBABILITY) -> EpochPlan:
    """Draw an epoch's randomness from ``generator`` in a fixed order (permutation, crop offsets,
    flips), on the generator's device (the CPU for the trainer's generators), so one generator state
    gives the same epoch on every device."""
    if (shuffle or augment) and generator is None:
        # Falling back to the global RNG would make runs irreproducible and unresumable.
        raise ValueError("shuffle/augment need an explicit torch.Generator")
    on = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(n, generator=generator, device=on) if shuffle else torch.arange(n, device=on)
    if not augment:
        return EpochPlan(order, None, None)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=on)
    flips = torch.rand(n, generator=generator, device=on) < flip_probability
    return EpochPlan(order, offsets, flips)


def crop(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Per-sample crop of the zero-padded batch back to the input size, sample i's window starting at
    ``offsets[:, i]`` (row, column): torchvision's ``RandomCrop(H, padding=padding)`` for uniform offsets
    in ``0..2*padding``. One gather, no host synchronisation."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # zeros = black, before normalisation
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # b x h
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # b x w
    batch_idx = torch.arange(b, device=x.device)[:, None, None, None]
    chan_idx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


def hflip(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose ``flips`` entry is true."""
    return torch.where(flips[:, None, None, None], x.flip(-1), x)


def normalize(x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    shuffle: bool,
    augment: bool,
    generator: torch.Generator | None,
    drop_last: bool = False,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield one epoch of ``(normalised float32 inputs, int64 labels)`` on ``device``.

    ``x`` holds un-normalised images in [0, 1], on the CPU or already on ``device`` (then batches are
    gathered, augmented and normalised there without any host synchronisation). Shuffling and
    augmentation draw only from ``generator`` -- required when either is on -- all at the start of
    the epoch (:func:`draw_epoch_plan`), so the same generator state reproduces the same epoch on
    every device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(f"mean/std need {x.shape[1]} entries, got {len(mean)}/{len(std)}")

    n = x.shape[0]
    # Every copy happens here, once per epoch: the plan goes where augmentation runs (``device``),
    # the order also where the data live; normalisation constants are built once, not per batch.
    plan = draw_epoch_plan(n, shuffle=shuffle, augment=augment, generator=generator).to(device)
    order_x, order_y = plan.order.to(x.device), plan.order.to(y.device)
    mean_t = torch.tensor(mean, dtype=torch.float32).to(device)
    std_t = torch.tensor(std, dtype=torch.float32).to(device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        positions = slice(start, start + batch_size)
        xb = x[order_x[positions]].to(device=device, dtype=torch.float32)
        if augment:
            xb = hflip(crop(xb, CROP_PADDING, plan.crop_offsets[:, positions]), plan.flips[positions])
        yb = y[order_y[positions]].to(device=device, dtype=torch.int64)
        yield normalize(xb, mean_t, std_t), yb
