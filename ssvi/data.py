"""Datasets and minibatch iteration for the SSVI reproduction suite.

What this module provides
-------------------------
* :class:`Dataset` -- an in-memory dataset: float32 images in ``[0, 1]`` (N x C x H x W, *not*
  normalised), int64 labels, and the per-channel ``mean``/``std`` and ``augment`` flag that the
  training loop hands to :func:`iterate_batches`.
* A registry of datasets (:data:`DATASETS`, filled by :func:`register_dataset`) and the entry point
  :func:`load_dataset`:

  ========== ===================================================== ======== =========
  name       source                                                 augment  mean/std
  ========== ===================================================== ======== =========
  digits     scikit-learn ``load_digits`` (ships with sklearn)      no       train split
  cifar10    torchvision ``CIFAR10`` (python version)               yes      reference
  cifar100   torchvision ``CIFAR100`` (python version)              yes      reference
  svhn       torchvision ``SVHN`` (``<data_dir>/svhn/*.mat``)       no       standard
  ========== ===================================================== ======== =========

* :func:`load_cifar10c` -- one corruption/severity block of CIFAR-10-C (evaluation only).
* :func:`iterate_batches` -- shuffling, tensor-level augmentation (random crop with zero padding 4
  and random horizontal flip, as ``RandomCrop(32, padding=4) + RandomHorizontalFlip``) and
  normalisation, drawing every random number from an explicit ``torch.Generator``.

Usage
-----
>>> from ssvi.data import load_dataset, iterate_batches
>>> ds = load_dataset("digits")                     # no files needed; 1,437 train / 360 test
>>> g = torch.Generator().manual_seed(0)
>>> for x, y in iterate_batches(ds.x_train, ds.y_train, 128, mean=ds.mean, std=ds.std,
...                             shuffle=True, augment=ds.augment, generator=g):
...     ...

Files are never fetched implicitly: with ``download=False`` (the default) a missing or corrupt
dataset raises :class:`DataMissingError`, whose message names the exact files expected and where
to get them. Compute nodes usually have no internet, so data are prepared once on a login node
(``download: true`` or ``snakemake prepare_data``) and copied into ``data_dir``.

Reproducibility: :func:`iterate_batches` never touches the global RNGs. Given the same generator
state it yields exactly the same batches, so saving ``generator.get_state()`` in a checkpoint is
enough to resume a run bit-for-bit (on the same device type).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError

__all__ = [
    "CIFAR10C_CORRUPTIONS",
    "DATASETS",
    "DataMissingError",
    "Dataset",
    "EpochPlan",
    "draw_epoch_plan",
    "iterate_batches",
    "list_datasets",
    "load_cifar10c",
    "load_dataset",
    "register_dataset",
]

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

# Normalisation constants used by the authors' scripts (reference section 2).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)
# Commonly used SVHN training-set statistics (SVHN is used mainly as an OOD set).
SVHN_MEAN: tuple[float, float, float] = (0.4377, 0.4438, 0.4728)
SVHN_STD: tuple[float, float, float] = (0.1980, 0.2010, 0.1970)

# digits: the fixed split and default upsampled size (8x8 is too small for a ResNet stem).
DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
DIGITS_DEFAULT_IMAGE_SIZE = 16
DIGITS_MAX_VALUE = 16.0  # sklearn's digits are integer intensities 0..16

# Augmentation: RandomCrop(size, padding=4) + RandomHorizontalFlip(p=0.5).
CROP_PADDING = 4
FLIP_PROBABILITY = 0.5

CIFAR10C_SEVERITIES = 5
# The 15 main corruptions of Hendrycks & Dietterich (2019), then the 4 extra ones.
CIFAR10C_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_CIFAR10C_URL = "https://zenodo.org/record/2535967"
_HOW_TO_GET = (
    "set download: true on a machine with internet or run `snakemake prepare_data` on a login "
    "node, or copy the files there"
)


class DataMissingError(UserError, RuntimeError):
    """A dataset's files are missing or corrupt; the message says which files, where, and how."""


# --------------------------------------------------------------------------------------------
# Dataset container and registry
# --------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """An in-memory image classification dataset.

    Images are kept un-normalised in ``[0, 1]`` so that augmentation pads with true black (as
    torchvision's ``RandomCrop(padding=4)`` does before ``Normalize``); :func:`iterate_batches`
    applies ``mean``/``std`` per batch.
    """

    name: str
    x_train: torch.Tensor  # float32, N x C x H x W, in [0, 1]
    y_train: torch.Tensor  # int64, N
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel
    std: tuple[float, ...]
    augment: bool  # random crop (padding 4) + horizontal flip during training

    def __post_init__(self) -> None:
        # Fail at load time rather than deep inside a training loop.
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.float32 or x.dim() != 4:
                raise ValueError(
                    f"{self.name}: x_{split} must be float32 N x C x H x W, got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{self.name}: y_{split} must be int64 of length {x.shape[0]}, got {y.dtype} {tuple(y.shape)}"
                )
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(f"{self.name}: mean/std need {self.in_channels} entries")

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        """Image height H (all datasets here are square)."""
        return int(self.x_train.shape[2])

    def __repr__(self) -> str:  # the default repr would print whole tensors
        return (
            f"Dataset(name={self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
            f"num_classes={self.num_classes}, augment={self.augment})"
        )


DatasetLoader = Callable[[Path, bool, int | None], Dataset]

DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator adding ``loader(data_dir, download, image_size) -> Dataset`` to :data:`DATASETS`."""

    def decorator(loader: DatasetLoader) -> DatasetLoader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = loader
        return loader

    return decorator


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def load_dataset(
    name: str,
    data_dir: str | Path = "data",
    download: bool = False,
    image_size: int | None = None,
) -> Dataset:
    """Load a registered dataset.

    ``image_size`` resizes every image to ``image_size x image_size`` (bilinear); ``None`` keeps the
    dataset's default size (native, or 16 for ``digits``). Raises :class:`ValueError` for an
    unknown name and :class:`DataMissingError` when files are missing.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed values: {', '.join(list_datasets())}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return DATASETS[name](Path(data_dir), download, image_size)


# --------------------------------------------------------------------------------------------
# Small conversion helpers
# --------------------------------------------------------------------------------------------


def _uint8_to_unit_float(images: np.ndarray, layout: str) -> torch.Tensor:
    """uint8 images in ``layout`` ("NHWC" or "NCHW") -> contiguous float32 NCHW in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    elif layout != "NCHW":
        raise ValueError(f"unsupported layout {layout!r}")
    return x.float().div_(255.0).contiguous()


def _labels_to_tensor(labels: Sequence[int] | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)


def _resize(x: torch.Tensor, size: int | None, chunk: int = 4096) -> torch.Tensor:
    """Bilinear resize to ``size x size`` (no-op for ``None`` or the current size), clamped to [0, 1].

    Works in chunks so that resizing CIFAR's 50,000 images does not double peak memory. Antialiasing
    is enabled only when shrinking (it has no effect when enlarging, e.g. digits 8 -> 16).
    """
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    shrinking = size < max(x.shape[-2:])
    parts = [
        F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
        for part in x.split(chunk)
    ]
    return torch.cat(parts).clamp_(0.0, 1.0)


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of N x C x H x W images."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), correction=0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# --------------------------------------------------------------------------------------------
# digits (scikit-learn)
# --------------------------------------------------------------------------------------------


@register_dataset("digits")
def _load_digits(data_dir: Path, download: bool, image_size: int | None) -> Dataset:
    # Ships inside scikit-learn: data_dir/download are irrelevant. The split is fixed (stratified,
    # random_state=0) so every run and every method sees the same 1,437 / 360 images.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / DIGITS_MAX_VALUE  # (1797, 8, 8) in [0, 1]
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, bunch.target, test_size=DIGITS_TEST_SIZE, stratify=bunch.target, random_state=DIGITS_SPLIT_SEED
    )
    size = DIGITS_DEFAULT_IMAGE_SIZE if image_size is None else image_size
    x_train = _resize(torch.from_numpy(x_tr).unsqueeze(1), size)
    x_test = _resize(torch.from_numpy(x_te).unsqueeze(1), size)
    mean, std = _channel_stats(x_train)  # training split only: no test-set leakage
    return Dataset(
        name="digits",
        x_train=x_train.contiguous(),
        y_train=_labels_to_tensor(y_tr),
        x_test=x_test.contiguous(),
        y_test=_labels_to_tensor(y_te),
        num_classes=10,
        mean=mean,
        std=std,
        augment=False,  # flipping/shifting digits changes their meaning (and 8x8 has no margin)
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (torchvision, python version)
# --------------------------------------------------------------------------------------------


def _cifar_missing_message(title: str, root: Path, folder: str, files: str, detail: str) -> str:
    return (
        f"{title} not found or corrupt under {root}: expected {root / folder}/{{{files}}} "
        f"(the python version from {_CIFAR_URL}); {_HOW_TO_GET}. ({detail})"
    )


def _load_cifar(
    name: str, title: str, dataset_cls: type, folder: str, files: str, num_classes: int,
    mean: tuple[float, ...], std: tuple[float, ...], data_dir: Path, download: bool, image_size: int | None,
) -> Dataset:
    root = data_dir.expanduser().resolve()
    try:
        # torchvision checks MD5 sums and raises RuntimeError on missing/corrupt files; a failed
        # download (no internet) surfaces as OSError (URLError) or RuntimeError.
        train = dataset_cls(root=str(root), train=True, download=download)
        test = dataset_cls(root=str(root), train=False, download=download)
    except (RuntimeError, OSError) as exc:
        raise DataMissingError(_cifar_missing_message(title, root, folder, files, str(exc))) from exc
    return Dataset(
        name=name,
        x_train=_resize(_uint8_to_unit_float(train.data, "NHWC"), image_size),
        y_train=_labels_to_tensor(train.targets),
        x_test=_resize(_uint8_to_unit_float(test.data, "NHWC"), image_size),
        y_test=_labels_to_tensor(test.targets),
        num_classes=num_classes,
        mean=mean,
        std=std,
        augment=True,
    )


@register_dataset("cifar10")
def _load_cifar10(data_dir: Path, download: bool, image_size: int | None) -> Dataset:
    from torchvision.datasets import CIFAR10

    return _load_cifar(
        "cifar10", "CIFAR-10", CIFAR10, "cifar-10-batches-py",
        "data_batch_1..5,test_batch,batches.meta", 10, CIFAR10_MEAN, CIFAR10_STD,
        data_dir, download, image_size,
    )


@register_dataset("cifar100")
def _load_cifar100(data_dir: Path, download: bool, image_size: int | None) -> Dataset:
    from torchvision.datasets import CIFAR100

    return _load_cifar(
        "cifar100", "CIFAR-100", CIFAR100, "cifar-100-python", "train,test,meta", 100,
        CIFAR100_MEAN, CIFAR100_STD, data_dir, download, image_size,
    )


# --------------------------------------------------------------------------------------------
# SVHN (torchvision, .mat files)
# --------------------------------------------------------------------------------------------


@register_dataset("svhn")
def _load_svhn(data_dir: Path, download: bool, image_size: int | None) -> Dataset:
    from torchvision.datasets import SVHN

    root = (data_dir.expanduser() / "svhn").resolve()
    try:
        train = SVHN(root=str(root), split="train", download=download)
        test = SVHN(root=str(root), split="test", download=download)
    except (RuntimeError, OSError, ValueError) as exc:  # loadmat raises ValueError on a bad file
        raise DataMissingError(
            f"SVHN not found or corrupt under {root}: expected {root}/{{train_32x32.mat,test_32x32.mat}} "
            f"(format 2, cropped digits, from {_SVHN_URL}); {_HOW_TO_GET}. ({exc})"
        ) from exc
    # torchvision already maps label 10 -> digit 0 and returns data as N x C x H x W uint8.
    return Dataset(
        name="svhn",
        x_train=_resize(_uint8_to_unit_float(train.data, "NCHW"), image_size),
        y_train=_labels_to_tensor(train.labels),
        x_test=_resize(_uint8_to_unit_float(test.data, "NCHW"), image_size),
        y_test=_labels_to_tensor(test.labels),
        num_classes=10,
        mean=SVHN_MEAN,
        std=SVHN_STD,
        augment=False,  # horizontal flips are wrong for digits
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10-C (numpy files, evaluation only)
# --------------------------------------------------------------------------------------------


def load_cifar10c(data_dir: str | Path, corruption: str, severity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x, y)`` for one CIFAR-10-C corruption at ``severity`` in 1..5.

    ``<data_dir>/CIFAR-10-C/<corruption>.npy`` holds the 5 severities stacked in order 1..5 (the
    release has 5 x 10,000 uint8 N x 32 x 32 x 3 images); ``labels.npy`` is aligned with it. Any N
    divisible by 5 is accepted. ``x`` is float32 N x C x H x W in [0, 1], ``y`` int64.
    """
    if corruption not in CIFAR10C_CORRUPTIONS:
        raise ValueError(
            f"unknown CIFAR-10-C corruption {corruption!r}; allowed values: {', '.join(CIFAR10C_CORRUPTIONS)}"
        )
    if not 1 <= severity <= CIFAR10C_SEVERITIES:
        raise ValueError(f"severity must be in 1..{CIFAR10C_SEVERITIES}, got {severity}")
    folder = Path(data_dir).expanduser().resolve() / "CIFAR-10-C"
    images_path, labels_path = folder / f"{corruption}.npy", folder / "labels.npy"
    missing = [str(p) for p in (images_path, labels_path) if not p.is_file()]
    if missing:
        raise DataMissingError(
            f"CIFAR-10-C not found: missing {', '.join(missing)} (expected {folder}/{{<corruption>.npy,labels.npy}} "
            f"from {_CIFAR10C_URL}); download CIFAR-10-C.tar there and extract it into {folder.parent}, "
            "or run `snakemake prepare_data` on a login node."
        )
    # Memory-map so that only the requested severity block (1/5 of 150 MB) is read.
    images = np.load(images_path, mmap_mode="r")
    labels = np.load(labels_path, mmap_mode="r")
    n = images.shape[0]
    if images.ndim != 4 or images.shape[-1] != 3 or n % CIFAR10C_SEVERITIES or labels.shape[0] != n:
        raise DataMissingError(
            f"CIFAR-10-C files look corrupt: {images_path} has shape {images.shape} (expected 5k x 32 x 32 x 3) "
            f"and {labels_path} has {labels.shape[0]} labels; re-extract CIFAR-10-C.tar from {_CIFAR10C_URL}."
        )
    block = n // CIFAR10C_SEVERITIES
    rows = slice((severity - 1) * block, severity * block)
    # np.array copies the block out of the read-only memory map (torch needs writable memory).
    return _uint8_to_unit_float(np.array(images[rows]), "NHWC"), _labels_to_tensor(np.array(labels[rows]))


# --------------------------------------------------------------------------------------------
# Minibatch iteration with tensor-level augmentation
# --------------------------------------------------------------------------------------------


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
