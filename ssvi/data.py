"""Datasets of the SSVI reproduction suite: the registry, the file loaders and their verification.

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
  digits     scikit-learn's ``digits.csv.gz`` (ships with sklearn)  no       train split
  cifar10    torchvision ``CIFAR10`` (python version)               yes      reference
  cifar100   torchvision ``CIFAR100`` (python version)              yes      reference
  svhn       torchvision ``SVHN`` (``<data_dir>/svhn/*.mat``)       no       standard
  ========== ===================================================== ======== =========

* :func:`load_cifar10c` -- one corruption/severity block of CIFAR-10-C (evaluation only).
* :func:`verify_dataset` -- what ``python -m ssvi data --dataset NAME`` checks (every registered dataset,
  and ``cifar10c``); :func:`expected_files` -- the files a dataset needs in ``data_dir``.
* Minibatches come from :func:`ssvi.batches.iterate_batches`.

Usage
-----
>>> from ssvi.data import load_dataset
>>> from ssvi.batches import iterate_batches
>>> ds = load_dataset("digits")                     # no files needed; 1,437 train / 360 test
>>> g = torch.Generator().manual_seed(0)
>>> for x, y in iterate_batches(ds.x_train, ds.y_train, 128, mean=ds.mean, std=ds.std,
...                             shuffle=True, augment=ds.augment, generator=g):
...     ...

Files are never fetched implicitly: with ``download=False`` (the default) a missing or corrupt
dataset raises :class:`DataMissingError`, whose message names each missing or corrupt file and the
command that fetches it. Compute nodes usually have no internet, so data are prepared once on a login
node (``python -m ssvi data --dataset NAME --data-dir DIR --download``) and copied into ``data_dir``.

"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Callable, Sequence
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
    "describe_missing",
    "expected_files",
    "list_datasets",
    "load_cifar10c",
    "load_dataset",
    "register_dataset",
    "verifiable_datasets",
    "verify_dataset",
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

# digits: the fixed split (train_test_split(test_size=360, stratify=labels, random_state=0), stored as row
# indices so that loading needs no scikit-learn import, ~2 s of every job) and the default upsampled size
# (8x8 is too small for a ResNet stem).
DIGITS_SPLIT_FILE = Path(__file__).with_name("digits_split.json")
DIGITS_DEFAULT_IMAGE_SIZE = 16
DIGITS_MAX_VALUE = 16.0  # sklearn's digits are integer intensities 0..16

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

CIFAR10C = "cifar10c"  # not a training dataset: evaluation blocks only (load_cifar10c)
CIFAR10C_FOLDER = "CIFAR-10-C"

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_CIFAR10C_URL = "https://zenodo.org/record/2535967"


class DataMissingError(UserError, RuntimeError):
    """A dataset's files are missing or corrupt; the message says which files, where, and how."""


def _how_to_fetch(name: str, data_dir: Path) -> str:
    return (f"fetch them on a machine with internet with `python -m ssvi data --dataset {name} --data-dir {data_dir} "
            "--download` (or set `download: true` in the run or workflow config), or copy them there")


def _file_problems(files: Sequence[tuple[Path, str | None]]) -> list[str]:
    """``missing PATH`` / ``PATH fails its MD5 check`` for each expected (path, md5) that is absent or corrupt;
    one entry for a missing folder."""
    from torchvision.datasets.utils import check_integrity

    folders = {path.parent for path, _ in files}
    if len(folders) == 1 and not (folder := folders.pop()).is_dir():
        return [f"missing folder {folder} (it should hold {', '.join(path.name for path, _ in files)})"]
    problems = []
    for path, md5 in files:
        if not path.is_file():
            problems.append(f"missing {path}")
        elif md5 is not None and not check_integrity(str(path), md5):
            problems.append(f"{path} fails its MD5 check (corrupt or partly written: delete it and fetch it again)")
    return problems


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


def sklearn_data_file(*parts: str) -> Path:
    """A data file shipped inside the installed scikit-learn package, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("scikit-learn is not installed; it ships the digits data (pip install scikit-learn)")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed scikit-learn; reinstall it (pip install "
                        "--force-reinstall scikit-learn)")
    return path


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``load_digits`` gives them: images (1797, 8, 8) float64 0..16, labels int."""
    with gzip.open(sklearn_data_file("datasets", "data", "digits.csv.gz"), "rt") as csv:
        table = np.loadtxt(csv, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def sample_photos() -> list[np.ndarray]:
    """scikit-learn's two sample photographs (china.jpg, flower.jpg) as ``load_sample_images`` gives them:
    uint8 H x W x 3 arrays, in file-name order."""
    from PIL import Image
    return [np.asarray(Image.open(sklearn_data_file("datasets", "images", name)))
            for name in ("china.jpg", "flower.jpg")]


@register_dataset("digits")
def _load_digits(data_dir: Path, download: bool, image_size: int | None) -> Dataset:
    # Ships inside scikit-learn: data_dir/download are irrelevant. The split is fixed (DIGITS_SPLIT_FILE)
    # so every run and every method sees the same 1,437 / 360 images.
    images, labels = digits_arrays()
    images = images.astype(np.float32) / DIGITS_MAX_VALUE  # (1797, 8, 8) in [0, 1]
    split = json.loads(DIGITS_SPLIT_FILE.read_text())
    x_tr, x_te, y_tr, y_te = images[split["train"]], images[split["test"]], labels[split["train"]], labels[split["test"]]
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


def _torchvision_files(dataset_cls: type, root: Path) -> list[tuple[Path, str]]:
    """(path, md5) of every file a torchvision CIFAR or SVHN class reads, as torchvision itself lists them."""
    if hasattr(dataset_cls, "split_list"):  # SVHN: {split: [url, filename, md5]}; the "extra" split is unused
        return [(root / dataset_cls.split_list[s][1], dataset_cls.split_list[s][2]) for s in ("train", "test")]
    folder = root / dataset_cls.base_folder
    listed = [*dataset_cls.train_list, *dataset_cls.test_list, [dataset_cls.meta["filename"], dataset_cls.meta["md5"]]]
    return [(folder / filename, md5) for filename, md5 in listed]


def _unusable(title: str, name: str, data_dir: Path, files: list[tuple[Path, str]], source: str, error: Exception,
              download: bool) -> DataMissingError:
    """The error for a torchvision dataset that failed to load, naming each missing or corrupt file."""
    problems = _file_problems(files) or [f"torchvision could not read the files ({error})"]
    attempt = f" (the download failed: {error})" if download else ""
    return DataMissingError(f"{title} is not usable under {data_dir}: {'; '.join(problems)}{attempt}; "
                            f"expected {source}; {_how_to_fetch(name, data_dir)}")


def _load_cifar(
    name: str, title: str, dataset_cls: type, num_classes: int,
    mean: tuple[float, ...], std: tuple[float, ...], data_dir: Path, download: bool, image_size: int | None,
) -> Dataset:
    root = data_dir.expanduser().resolve()
    try:
        # torchvision checks MD5 sums and raises RuntimeError on missing/corrupt files (without naming
        # them); a failed download (no internet) surfaces as OSError (URLError) or RuntimeError.
        train = dataset_cls(root=str(root), train=True, download=download)
        test = dataset_cls(root=str(root), train=False, download=download)
    except (RuntimeError, OSError) as exc:
        raise _unusable(title, name, root, _torchvision_files(dataset_cls, root),
                        f"the python version from {_CIFAR_URL}", exc, download) from exc
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

    return _load_cifar("cifar10", "CIFAR-10", CIFAR10, 10, CIFAR10_MEAN, CIFAR10_STD, data_dir, download, image_size)


@register_dataset("cifar100")
def _load_cifar100(data_dir: Path, download: bool, image_size: int | None) -> Dataset:
    from torchvision.datasets import CIFAR100

    return _load_cifar("cifar100", "CIFAR-100", CIFAR100, 100, CIFAR100_MEAN, CIFAR100_STD, data_dir, download,
                       image_size)


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
        raise _unusable("SVHN", "svhn", root.parent, _torchvision_files(SVHN, root),
                        f"format 2, cropped digits, from {_SVHN_URL}", exc, download) from exc
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


def _cifar10c_folder(data_dir: str | Path) -> Path:
    return Path(data_dir).expanduser().resolve() / CIFAR10C_FOLDER


def _cifar10c_missing(data_dir: str | Path, files: Sequence[Path]) -> DataMissingError | None:
    problems = _file_problems([(path, None) for path in files])
    if not problems:
        return None
    folder = _cifar10c_folder(data_dir)
    return DataMissingError(
        f"CIFAR-10-C is not usable: {'; '.join(problems)}; download CIFAR-10-C.tar from {_CIFAR10C_URL} on a "
        f"machine with internet and extract it into {folder.parent} (torchvision cannot download it), then "
        f"`python -m ssvi data --dataset {CIFAR10C} --data-dir {folder.parent}` verifies it")


def _cifar10c_arrays(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Memory maps of one corruption's images and the labels, after checking their shapes (nothing is read)."""
    try:
        images = np.load(images_path, mmap_mode="r")
        labels = np.load(labels_path, mmap_mode="r")
    except (ValueError, OSError) as exc:  # a truncated or foreign file
        raise DataMissingError(f"CIFAR-10-C file {images_path} or {labels_path} cannot be read ({exc}); "
                               f"re-extract CIFAR-10-C.tar from {_CIFAR10C_URL}") from exc
    n = images.shape[0] if images.ndim else 0
    if images.ndim != 4 or images.shape[-1] != 3 or n == 0 or n % CIFAR10C_SEVERITIES or labels.shape[:1] != (n,):
        raise DataMissingError(
            f"CIFAR-10-C files look corrupt: {images_path} has shape {images.shape} (expected 5k x 32 x 32 x 3) "
            f"and {labels_path} has shape {labels.shape} (expected 5k labels); re-extract CIFAR-10-C.tar from "
            f"{_CIFAR10C_URL}")
    return images, labels


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
    folder = _cifar10c_folder(data_dir)
    images_path, labels_path = folder / f"{corruption}.npy", folder / "labels.npy"
    if error := _cifar10c_missing(data_dir, [images_path, labels_path]):
        raise error
    # Memory-mapped, so that only the requested severity block (1/5 of 150 MB) is read.
    images, labels = _cifar10c_arrays(images_path, labels_path)
    block = images.shape[0] // CIFAR10C_SEVERITIES
    rows = slice((severity - 1) * block, severity * block)
    # np.array copies the block out of the read-only memory map (torch needs writable memory).
    return _uint8_to_unit_float(np.array(images[rows]), "NHWC"), _labels_to_tensor(np.array(labels[rows]))


# --------------------------------------------------------------------------------------------
# What ``python -m ssvi data`` verifies
# --------------------------------------------------------------------------------------------


def verifiable_datasets() -> list[str]:
    """Names ``python -m ssvi data --dataset NAME`` accepts: the registered datasets and ``cifar10c``."""
    return [*list_datasets(), CIFAR10C]


def expected_files(name: str, data_dir: str | Path) -> list[Path]:
    """The files dataset ``name`` needs in ``data_dir`` (none for the embedded digits)."""
    root = Path(data_dir).expanduser().resolve()
    if name == CIFAR10C:
        folder = _cifar10c_folder(root)
        return [*(folder / f"{c}.npy" for c in CIFAR10C_CORRUPTIONS), folder / "labels.npy"]
    from torchvision.datasets import CIFAR10, CIFAR100, SVHN

    classes = {"cifar10": (CIFAR10, root), "cifar100": (CIFAR100, root), "svhn": (SVHN, root / "svhn")}
    if name not in classes:
        return []
    return [path for path, _ in _torchvision_files(*classes[name])]


def describe_missing(name: str, data_dir: str | Path) -> list[str]:
    """``missing PATH`` (or ``missing folder PATH (...)``) for each file of ``name`` absent from ``data_dir``;
    existence only, no checksums (quick enough to check before an evaluation starts)."""
    return _file_problems([(path, None) for path in expected_files(name, data_dir)])


def verify_dataset(name: str, data_dir: str | Path = "data", download: bool = False) -> dict:
    """Check (with ``download``: fetch first) that dataset ``name`` is complete in ``data_dir``; a summary."""
    if name not in verifiable_datasets():
        raise UserError(f"unknown dataset {name!r}; allowed: {', '.join(verifiable_datasets())}")
    if name != CIFAR10C:
        ds = load_dataset(name, data_dir, download=download)
        return {"dataset": ds.name, "data_dir": str(data_dir), "train": len(ds.y_train), "test": len(ds.y_test),
                "num_classes": ds.num_classes, "shape": list(ds.x_train.shape[1:])}
    files = expected_files(CIFAR10C, data_dir)
    if error := _cifar10c_missing(data_dir, files):
        raise error
    for path in files[:-1]:
        images, labels = _cifar10c_arrays(path, files[-1])  # every file as long as labels.npy
    n, height, width, channels = images.shape
    return {"dataset": CIFAR10C, "data_dir": str(data_dir), "corruptions": len(CIFAR10C_CORRUPTIONS),
            "severities": CIFAR10C_SEVERITIES, "test": n // CIFAR10C_SEVERITIES, "shape": [channels, height, width]}
