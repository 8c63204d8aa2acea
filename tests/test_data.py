"""Tests for ``ssvi.data``.

No network: every file-based dataset is written in its *real* on-disk format into ``tmp_path``
(tiny sizes) and read back through the real torchvision-based loaders, so the tests check the
format handling (layout transposes, label mapping, severity slicing) rather than a mock of it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from torchvision.datasets import CIFAR10

from ssvi import batches
from ssvi.batches import iterate_batches
from ssvi.cli import main
from ssvi.data import (
    CIFAR10C_CORRUPTIONS,
    DATASETS,
    DataMissingError,
    Dataset,
    digits_arrays,
    list_datasets,
    load_cifar10c,
    load_dataset,
    sample_photos,
    verify_dataset,
)
from ssvi.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
import fake_datasets as fake  # noqa: E402

_REAL_CIFAR_CHECK = CIFAR10._check_integrity
_REAL_CHECK_INTEGRITY = torchvision.datasets.cifar.check_integrity


@pytest.fixture
def cifar10_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, np.ndarray, list[int], np.ndarray, list[int]]:
    fake.bypass_md5(monkeypatch)
    return (tmp_path, *fake.write_cifar10(tmp_path))


def _expected_nchw(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def test_registry_lists_all_datasets() -> None:
    assert list_datasets() == sorted(["cifar10", "cifar100", "digits", "svhn"])
    assert set(DATASETS) == set(list_datasets())


def test_unknown_dataset_lists_allowed_names() -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    message = str(info.value)
    assert "imagenet" in message
    for name in list_datasets():
        assert name in message


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# ----------------------------------------------------------------------------------------------


def test_cifar10_real_format_round_trips(cifar10_files) -> None:
    root, train_rows, train_labels, test_rows, test_labels = cifar10_files
    ds = load_dataset("cifar10", data_dir=root)
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    assert ds.y_train.tolist() == train_labels and ds.y_test.tolist() == test_labels
    # A known pixel: image 0 (first of data_batch_1), channel 1, row 5, column 7 sits at
    # offset c*1024 + h*32 + w of the CHW row.
    assert ds.x_train[0, 1, 5, 7].item() == pytest.approx(train_rows[0, 1 * 1024 + 5 * 32 + 7] / 255.0)
    # ... and every pixel of every image, train (batches 1..5 in order) and test.
    torch.testing.assert_close(ds.x_train, _expected_nchw(train_rows), rtol=0, atol=0)
    torch.testing.assert_close(ds.x_test, _expected_nchw(test_rows), rtol=0, atol=0)
    assert ds.num_classes == 10 and ds.in_channels == 3 and ds.image_size == 32
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2023, 0.1994, 0.2010)
    assert ds.augment is True


def test_cifar10_resizes_on_request(cifar10_files) -> None:
    ds = load_dataset("cifar10", data_dir=cifar10_files[0], image_size=16)
    assert ds.x_train.shape == (10, 3, 16, 16) and ds.image_size == 16
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0


def test_cifar100_real_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.bypass_md5(monkeypatch)
    train_rows, _ = fake.write_cifar100(tmp_path, train_fine=(0, 99, 42, 7, 7, 63), test_fine=(5, 98, 0, 1))
    train_fine, test_fine = [0, 99, 42, 7, 7, 63], [5, 98, 0, 1]

    ds = load_dataset("cifar100", data_dir=tmp_path)
    assert ds.x_train.shape == (6, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.y_train.tolist() == train_fine and ds.y_test.tolist() == test_fine  # fine labels, not coarse
    torch.testing.assert_close(ds.x_train, _expected_nchw(train_rows), rtol=0, atol=0)
    assert ds.num_classes == 100
    assert ds.mean == (0.5071, 0.4865, 0.4409) and ds.std == (0.2673, 0.2564, 0.2762)
    assert ds.augment is True


@pytest.mark.parametrize(("name", "folder"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_missing_names_the_files_and_a_command_that_fetches_them(tmp_path: Path, name: str, folder: str) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataMissingError) as info:
        load_dataset(name, data_dir=root)
    message = str(info.value)
    assert str(root.resolve() / folder) in message and "cs.toronto.edu" in message
    assert f"python -m ssvi data --dataset {name} --data-dir {root.resolve()} --download" in message
    assert "`download: true` in the run or workflow config" in message
    assert "snakemake" not in message and "\n" not in message
    assert isinstance(info.value, RuntimeError)


def test_cifar_corrupt_or_missing_files_are_named(cifar10_files) -> None:
    # Re-enable torchvision's real MD5 check: our synthetic files fail it like corrupt ones would.
    root = cifar10_files[0]
    folder = root.resolve() / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CIFAR10, "_check_integrity", _REAL_CIFAR_CHECK)
        mp.setattr(torchvision.datasets.cifar, "check_integrity", _REAL_CHECK_INTEGRITY)
        with pytest.raises(DataMissingError) as info:
            load_dataset("cifar10", data_dir=root)
    message = str(info.value)
    assert f"missing {folder / 'data_batch_3'}" in message
    assert f"{folder / 'test_batch'}" in message and "MD5" in message
    assert "not found or corrupt" not in message


# ----------------------------------------------------------------------------------------------
# SVHN
# ----------------------------------------------------------------------------------------------


def test_svhn_real_format_maps_label_10_to_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real layout: X is H x W x C x N uint8, y is N x 1 with digits 1..10 where 10 means "0".
    fake.bypass_md5(monkeypatch)
    x_train, _ = fake.write_svhn(tmp_path, y_train=(10, 1, 9, 10, 5), y_test=(3, 10))

    ds = load_dataset("svhn", data_dir=tmp_path)
    assert ds.x_train.shape == (5, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    assert ds.y_train.tolist() == [0, 1, 9, 0, 5] and ds.y_test.tolist() == [3, 0]
    # Pixel (h=4, w=11, c=2) of image n=3 moves to x[3, 2, 4, 11].
    assert ds.x_train[3, 2, 4, 11].item() == pytest.approx(x_train[4, 11, 2, 3] / 255.0)
    expected = torch.from_numpy(x_train.transpose(3, 2, 0, 1) / 255.0).float()
    torch.testing.assert_close(ds.x_train, expected, rtol=0, atol=0)
    assert ds.num_classes == 10 and ds.augment is False
    assert ds.mean == (0.4377, 0.4438, 0.4728) and ds.std == (0.1980, 0.2010, 0.1970)


def test_svhn_missing_raises_data_missing_error(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as info:
        load_dataset("svhn", data_dir=tmp_path)
    message = str(info.value)
    assert str((tmp_path / "svhn").resolve()) in message and "train_32x32.mat" in message


# ----------------------------------------------------------------------------------------------
# CIFAR-10-C
# ----------------------------------------------------------------------------------------------


def test_cifar10c_corruption_names() -> None:
    assert len(CIFAR10C_CORRUPTIONS) == 19 and len(set(CIFAR10C_CORRUPTIONS)) == 19
    assert {"speckle_noise", "gaussian_blur", "spatter", "saturate"} <= set(CIFAR10C_CORRUPTIONS)
    assert {"gaussian_noise", "jpeg_compression", "elastic_transform", "fog"} <= set(CIFAR10C_CORRUPTIONS)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_cifar10c_severity_slicing(tmp_path: Path, severity: int) -> None:
    fake.write_cifar10c(tmp_path, ["fog"])
    x, y = load_cifar10c(tmp_path, "fog", severity)
    first = (severity - 1) * 4
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x[:, 0, 5, 5].tolist() == pytest.approx([(first + i) / 255.0 for i in range(4)])
    assert y.tolist() == [(first + i) % 10 for i in range(4)]
    assert torch.all(x[:, 2, 0, 1] == 200 / 255.0)  # NHWC -> NCHW
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_cifar10c_errors(tmp_path: Path) -> None:
    folder = (tmp_path / "CIFAR-10-C").resolve()
    with pytest.raises(DataMissingError) as info:
        load_cifar10c(tmp_path, "snow", 1)
    assert f"missing folder {folder} (it should hold snow.npy, labels.npy)" in str(info.value)
    fake.write_cifar10c(tmp_path, ["fog"])
    with pytest.raises(DataMissingError) as info:
        load_cifar10c(tmp_path, "snow", 1)
    assert f"missing {folder / 'snow.npy'};" in str(info.value) and "labels.npy" not in str(info.value)
    assert "zenodo.org" in str(info.value) and "snakemake" not in str(info.value)
    with pytest.raises(ValueError, match="allowed"):
        load_cifar10c(tmp_path, "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        load_cifar10c(tmp_path, "snow", 6)


def test_data_command_verifies_cifar10c(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fake.write_cifar10c(tmp_path, per_severity=3)
    assert main(["data", "--dataset", "cifar10c", "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"dataset": "cifar10c", "data_dir": str(tmp_path), "corruptions": 19,
                                                   "severities": 5, "test": 3, "shape": [3, 32, 32]}
    (tmp_path / "CIFAR-10-C" / "fog.npy").unlink()
    np.save(tmp_path / "CIFAR-10-C" / "snow.npy", np.zeros((10, 32, 32, 3), dtype=np.uint8))  # 2 per severity
    assert main(["data", "--dataset", "cifar10c", "--data-dir", str(tmp_path)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("ssvi: error: CIFAR-10-C is not usable: missing ") and "\n" not in line
    assert str((tmp_path / "CIFAR-10-C" / "fog.npy").resolve()) in line and "snow.npy" not in line
    (tmp_path / "CIFAR-10-C" / "fog.npy").symlink_to(tmp_path / "CIFAR-10-C" / "frost.npy")
    with pytest.raises(DataMissingError, match=r"look corrupt: \S*/snow.npy has shape \(10, 32, 32, 3\)"):
        verify_dataset("cifar10c", tmp_path)
    with pytest.raises(UserError, match="'cifar10-c'.*cifar10c"):
        verify_dataset("cifar10-c", tmp_path)


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_split_and_shape(digits: Dataset) -> None:
    assert digits.x_train.shape == (1437, 1, 16, 16) and digits.x_test.shape == (360, 1, 16, 16)
    assert digits.in_channels == 1 and digits.image_size == 16 and digits.num_classes == 10
    assert 0.0 <= float(digits.x_train.min()) and float(digits.x_train.max()) <= 1.0
    assert float(digits.x_train.max()) > 0.9  # really scaled by 1/16, not 1/255
    assert digits.augment is False


def test_digits_split_is_stratified(digits: Dataset) -> None:
    test_counts = torch.bincount(digits.y_test, minlength=10).double()
    totals = test_counts + torch.bincount(digits.y_train, minlength=10).double()
    assert test_counts.sum() == 360
    # Each class keeps the overall test fraction 360/1797 (up to rounding).
    assert torch.all((test_counts - totals * 360 / 1797).abs() <= 1.0)


def test_digits_is_deterministic_and_stats_from_train(digits: Dataset) -> None:
    again = load_dataset("digits")
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_test, digits.y_test)
    assert digits.mean[0] == pytest.approx(float(digits.x_train.mean()), abs=1e-6)
    assert digits.std[0] == pytest.approx(float(digits.x_train.std(correction=0)), abs=1e-6)


def test_digits_equal_scikit_learns_loader_and_split() -> None:
    # the loader reads sklearn's file and a stored split without importing sklearn: both must be exactly
    # what load_digits and train_test_split(test_size=360, stratify, random_state=0) give
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    reference = load_digits()
    images, labels = digits_arrays()
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)
    x_tr, x_te, y_tr, y_te = train_test_split(reference.images.astype(np.float32) / 16.0, reference.target,
                                              test_size=360, stratify=reference.target, random_state=0)
    ds = load_dataset("digits", image_size=8)
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(x_tr)) and torch.equal(ds.x_test[:, 0], torch.from_numpy(x_te))
    assert torch.equal(ds.y_train, torch.from_numpy(y_tr)) and torch.equal(ds.y_test, torch.from_numpy(y_te))


def test_sample_photos_equal_scikit_learns() -> None:
    from sklearn.datasets import load_sample_images

    reference = load_sample_images().images
    photos = sample_photos()
    assert len(photos) == len(reference) == 2
    assert all(np.array_equal(ours, theirs) and ours.dtype == np.uint8 for ours, theirs in zip(photos, reference))


def test_digits_native_size() -> None:
    ds = load_dataset("digits", image_size=8)
    from sklearn.datasets import load_digits

    # At 8x8 no interpolation happens: every training image is an original digit / 16.
    originals = {tuple(img.ravel()) for img in load_digits().images / 16.0}
    assert ds.x_train.shape == (1437, 1, 8, 8)
    assert tuple(ds.x_train[0, 0].double().numpy().ravel()) in originals


# ----------------------------------------------------------------------------------------------
# iterate_batches
# ----------------------------------------------------------------------------------------------

MEAN1, STD1 = (0.0,), (1.0,)


def _epoch(x, y, seed: int | None = 0, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    options = dict(mean=MEAN1, std=STD1, shuffle=True, augment=False)
    options.update(kwargs)
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return list(iterate_batches(x, y, 4, generator=gen, **options))


def _toy(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    return x, torch.arange(n)


def test_same_seed_same_batches_different_seed_different_order() -> None:
    x, y = _toy(32)
    a, b = _epoch(x, y, seed=0, augment=True), _epoch(x, y, seed=0, augment=True)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    c = _epoch(x, y, seed=1, augment=True)
    assert not torch.equal(torch.cat([yb for _, yb in a]), torch.cat([yb for _, yb in c]))


def test_resuming_from_generator_state_reproduces_next_epoch() -> None:
    x, y = _toy(12)
    opts = dict(mean=MEAN1, std=STD1, shuffle=True, augment=True)
    gen = torch.Generator().manual_seed(7)
    list(iterate_batches(x, y, 5, generator=gen, **opts))  # epoch 1
    saved = gen.get_state()
    epoch2 = list(iterate_batches(x, y, 5, generator=gen, **opts))
    resumed = torch.Generator()
    resumed.set_state(saved)
    epoch2_again = list(iterate_batches(x, y, 5, generator=resumed, **opts))
    for (xa, ya), (xb, yb) in zip(epoch2, epoch2_again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_global_rng_is_not_used() -> None:
    x, y = _toy(16)
    before = torch.get_rng_state()
    _epoch(x, y, augment=True)
    assert torch.equal(before, torch.get_rng_state())
    with pytest.raises(ValueError, match="Generator"):
        _epoch(x, y, seed=None)


def test_shuffle_covers_every_sample_once_and_drop_last() -> None:
    x, y = _toy(10)
    batches = _epoch(x, y)
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    labels = torch.cat([yb for _, yb in batches])
    assert sorted(labels.tolist()) == list(range(10)) and labels.tolist() != list(range(10))
    for xb, yb in batches:  # inputs stay paired with their labels
        assert torch.equal(xb, x[yb])
    dropped = _epoch(x, y, drop_last=True)
    assert [len(yb) for _, yb in dropped] == [4, 4]
    assert _epoch(x[:3], y[:3], drop_last=True) == []


def test_no_shuffle_keeps_order_and_normalises() -> None:
    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = list(iterate_batches(x, y, 4, mean=mean, std=std, shuffle=False, augment=False, generator=None))
    xs, ys = torch.cat([b[0] for b in out]), torch.cat([b[1] for b in out])
    assert ys.tolist() == list(range(6)) and xs.dtype == torch.float32 and ys.dtype == torch.int64
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(xs, expected)


def test_augmentation_crops_with_zero_padding() -> None:
    x = torch.rand(64, 2, 8, 8, generator=torch.Generator().manual_seed(5)) + 0.5  # no zeros inside
    y = torch.arange(64)
    out = list(iterate_batches(x, y, 16, mean=(0.0, 0.0), std=(1.0, 1.0), shuffle=False, augment=True,
                               generator=torch.Generator().manual_seed(0)))
    xs = torch.cat([b[0] for b in out])
    assert xs.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    offsets = set()
    for i in range(64):
        # Each output is an 8x8 window of the zero-padded image, possibly mirrored.
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            for window in [padded[i, :, dy : dy + 8, dx : dx + 8]]
            if torch.equal(xs[i], window) or torch.equal(xs[i], window.flip(-1))
        ]
        assert matches, f"sample {i} is not a crop of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets really vary per sample
    assert (xs == 0).any()  # some crops include the zero padding
    assert (xs == 0).float().mean() < 0.5


def test_horizontal_flip_is_random_per_sample() -> None:
    ramp = torch.arange(8.0).expand(32, 1, 8, 8).contiguous()
    plan = batches.draw_epoch_plan(32, shuffle=False, augment=True, generator=torch.Generator().manual_seed(0))
    flipped = batches.hflip(ramp, plan.flips)
    is_flipped = torch.tensor([torch.equal(img, ramp[0].flip(-1)) for img in flipped])
    is_same = torch.tensor([torch.equal(img, ramp[0]) for img in flipped])
    assert torch.all(is_flipped | is_same)
    assert 4 <= int(is_flipped.sum()) <= 28


def test_random_crop_zero_offset_region() -> None:
    # With a forced offset of 0 the top-left 4 rows/cols of the crop are padding.
    x = torch.ones(200, 1, 8, 8)
    plan = batches.draw_epoch_plan(200, shuffle=False, augment=True, generator=torch.Generator().manual_seed(0))
    crops = batches.crop(x, 4, plan.crop_offsets)
    top_left = [c for c in crops if c[0, 0, 0] == 0 and c[0, 3, 3] == 0 and c[0, 4, 4] == 1]
    assert top_left, "offset (0, 0) never drawn in 200 samples"
    assert torch.all(top_left[0][0, :4, :] == 0) and torch.all(top_left[0][0, :, :4] == 0)
    assert torch.all(top_left[0][0, 4:, 4:] == 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_iterate_batches_on_gpu_matches_cpu() -> None:
    x, y = _toy(20)
    opts = dict(mean=MEAN1, std=STD1, shuffle=True, augment=True)
    cpu = list(iterate_batches(x, y, 8, generator=torch.Generator().manual_seed(3), **opts))
    gen = torch.Generator().manual_seed(3)
    gpu = list(iterate_batches(x.cuda(), y.cuda(), 8, generator=gen, device="cuda", **opts))
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert xg.is_cuda and yg.is_cuda
        assert torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())
