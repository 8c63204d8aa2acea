"""``ssvi evaluate`` reports only what it measured: both sides of every OOD score in fp32, and no
``ood_shift.json`` when a configured OOD or shift set has no data unless that set is skipped explicitly
(then it is listed as not evaluated). Also the evaluation-set names the workflow uses (contract C-B).

    .venv/bin/python -m pytest tests/test_evaluate_trust.py -q

Runs are tiny (width 0.125, 8x8 inputs, 1 epoch, 1 thread); the CIFAR-family data are written in their
real file formats by tests/fixtures/fake_datasets.py.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from ssvi.cli import main
from ssvi.config import RunConfig
from ssvi.data import CIFAR10C_CORRUPTIONS, DataMissingError
from ssvi.errors import UserError
from ssvi.evaluate import posterior_generator, posterior_samples
from ssvi.metrics import ood_metrics, uncertainty_scores
from ssvi.shift import (RESULT_FILE, SEVERITIES, datasets_to_verify, evaluate_run, evaluation_sets,
                        load_finished_run, natural_patches)
from ssvi.rundir import PREDICTIONS
from ssvi.trainer import run

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
import fake_datasets as fake  # noqa: E402

TINY = {"method": "dense_vi", "width": 0.125, "image_size": 8, "epochs": 1, "threads": 1, "num_samples": 2,
        "eval_batch_size": 2000}


# --------------------------------------------------------------------------------------------
# evaluation-set names (contract C-B)
# --------------------------------------------------------------------------------------------

def test_evaluation_sets_and_the_datasets_to_verify():
    assert evaluation_sets("cifar10") == ["svhn", "cifar100", "cifar10c"]
    assert evaluation_sets("cifar100") == ["svhn", "cifar10"]
    assert evaluation_sets("digits") == ["natural_patches", "digits_corrupted"]
    assert datasets_to_verify("cifar10") == ["cifar10", "svhn", "cifar100", "cifar10c"]
    assert datasets_to_verify("cifar10", skip=["cifar10c", "svhn"]) == ["cifar10", "cifar100"]
    assert datasets_to_verify("cifar100", skip=["cifar10c"]) == ["cifar100", "svhn", "cifar10"]
    assert datasets_to_verify("digits") == ["digits"]  # its OOD and shift sets are generated
    with pytest.raises(UserError, match="'svhm'.*svhn"):
        datasets_to_verify("cifar10", skip=["svhm"])


# --------------------------------------------------------------------------------------------
# item 6: in-distribution and OOD scores in the same precision
# --------------------------------------------------------------------------------------------

def test_ood_scores_of_both_sides_come_from_fp32_probabilities(tmp_path):
    # lr 1e-9: the run stays at its initialisation, a chance-level model whose K samples differ by less
    # than fp16's resolution, so fp16 storage of the in-distribution probabilities changes every AUROC
    run(RunConfig.from_dict({**TINY, "lr": 1e-9, "lr_rho": 1e-9}), tmp_path)
    metrics, data, model, _ = load_finished_run(tmp_path, None, torch.device("cpu"))

    def fp32_samples(x):
        return posterior_samples(model, x, torch.zeros(len(x), dtype=torch.long), mean=data.mean, std=data.std,
                                 num_samples=TINY["num_samples"], generator=posterior_generator(0))

    ood = uncertainty_scores(fp32_samples(natural_patches(len(data.y_test), data.image_size, seed=0)))
    fp32 = uncertainty_scores(fp32_samples(data.x_test))
    fp16 = uncertainty_scores(torch.load(tmp_path / PREDICTIONS)["sample_probs"].float())
    expected = {s: ood_metrics(fp32[s], ood[s])["auroc"] for s in fp32}
    lossy = {s: ood_metrics(fp16[s], ood[s])["auroc"] for s in fp16}
    assert max(abs(expected[s] - lossy[s]) for s in expected) > 0.3  # the construction matters

    result = evaluate_run(tmp_path)
    assert {s: v["auroc"] for s, v in result["ood"]["natural_patches"].items()} == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------------------
# item 7: evaluation needs its data, or an explicit skip
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar10_run(tmp_path_factory):
    """A finished CIFAR-10 run and a data directory with every evaluation set (fake files, MD5 bypassed)."""
    root = tmp_path_factory.mktemp("cifar")
    data_dir = root / "data"
    fake.write_cifar10(data_dir, per_batch=4, test=6)
    fake.write_cifar100(data_dir)
    fake.write_svhn(data_dir)
    fake.write_cifar10c(data_dir, per_severity=2)
    with pytest.MonkeyPatch.context() as mp:
        fake.bypass_md5(mp)
        run(RunConfig.from_dict({**TINY, "dataset": "cifar10", "data_dir": str(data_dir)}), root / "run")
        yield root / "run", data_dir, mp


def _only(data_dir: Path, tmp_path: Path, *names: str) -> Path:
    """A data directory holding only the named folders of ``data_dir`` (as symlinks)."""
    (tmp_path / "partial").mkdir()
    for name in names:
        (tmp_path / "partial" / name).symlink_to(data_dir / name)
    return tmp_path / "partial"


def test_evaluation_with_every_set_present(cifar10_run):
    run_dir, data_dir, _ = cifar10_run
    result = evaluate_run(run_dir, data_dir)
    assert set(result["ood"]) == {"svhn", "cifar100"} and result["not_evaluated"] == []
    assert len(result["shift"]) == len(CIFAR10C_CORRUPTIONS) * len(SEVERITIES)
    assert result["evaluation_sets"] == ["svhn", "cifar100", "cifar10c"]


def test_a_missing_set_fails_without_writing_a_result(cifar10_run, tmp_path):
    run_dir, data_dir, _ = cifar10_run
    (run_dir / RESULT_FILE).unlink(missing_ok=True)
    partial = _only(data_dir, tmp_path, "cifar-10-batches-py", "cifar-100-python")
    with pytest.raises(DataMissingError) as info:
        evaluate_run(run_dir, partial)
    message = str(info.value)
    svhn, cifar10c = partial.resolve() / "svhn", partial.resolve() / "CIFAR-10-C"
    assert f"svhn: missing folder {svhn} (it should hold train_32x32.mat, test_32x32.mat)" in message
    assert f"cifar10c: missing folder {cifar10c} (it should hold gaussian_noise.npy" in message
    assert "evaluation: {skip: [svhn, cifar10c]}" in message and "--skip svhn --skip cifar10c" in message
    assert "cifar100" not in message.split("skip")[0]  # present sets are not blamed
    assert not (run_dir / RESULT_FILE).exists()


def test_skipped_sets_are_listed_as_not_evaluated(cifar10_run, tmp_path, capsys):
    run_dir, data_dir, _ = cifar10_run
    partial = _only(data_dir, tmp_path, "cifar-10-batches-py", "cifar-100-python")
    assert main(["evaluate", "--run", str(run_dir), "--data-dir", str(partial), "--threads", "1",
                 "--skip", "svhn", "--skip", "cifar10c"]) == 0
    result = json.loads((run_dir / RESULT_FILE).read_text())
    assert result["not_evaluated"] == ["svhn", "cifar10c"]
    assert set(result["ood"]) == {"cifar100"} and result["shift"] == [] and result["shift_by_severity"] == []


def test_evaluate_on_a_missing_run_directory_is_one_line(tmp_path, capsys):
    missing = tmp_path / "no_run"
    assert main(["evaluate", "--run", str(missing)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ssvi: error: {missing} ") and "ssvi train" in lines[0]


# --------------------------------------------------------------------------------------------
# `ssvi train --evaluate`: the workflow's one process per run
# --------------------------------------------------------------------------------------------

def _train_arguments(out: Path, data_dir: Path, *extra: str) -> list[str]:
    sets = [f"{key}={json.dumps(value)}" for key, value in {**TINY, "dataset": "cifar10", "data_dir": str(data_dir)}.items()]
    return ["train", "--out", str(out), *[word for s in sets for word in ("--set", s)], *extra]


def test_train_then_evaluate_in_one_process_equals_the_separate_evaluation(cifar10_run, tmp_path):
    run_dir, data_dir, _ = cifar10_run
    out = tmp_path / "run"
    assert main(_train_arguments(out, data_dir, "--evaluate", "--skip", "cifar10c")) == 0
    together = json.loads((out / RESULT_FILE).read_text())
    (out / RESULT_FILE).unlink()
    assert main(["evaluate", "--run", str(out), "--skip", "cifar10c"]) == 0
    separate = json.loads((out / RESULT_FILE).read_text())
    assert together["ood"] == separate["ood"] and together["not_evaluated"] == ["cifar10c"] == separate["not_evaluated"]


def test_train_with_evaluate_checks_the_evaluation_data_before_training(cifar10_run, tmp_path, capsys):
    _, data_dir, _ = cifar10_run
    partial = _only(data_dir, tmp_path, "cifar-10-batches-py", "cifar-100-python")
    out = tmp_path / "run"
    assert main(_train_arguments(out, partial, "--evaluate")) == 2
    error = capsys.readouterr().err
    assert error.startswith("ssvi: error: evaluation data of cifar10 missing: svhn") and "--skip svhn" in error
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()  # nothing was trained


def test_skip_without_evaluate_is_refused(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--skip", "svhn"]) == 2
    assert "--skip and --keep-probs only apply with --evaluate" in capsys.readouterr().err
