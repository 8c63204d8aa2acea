"""Compact sparse checkpoints (ssvi.export): exact round trip, size, model outputs, bad files."""

import io

import pytest
import torch

from ssvi.errors import UserError
from ssvi.export import (FORMAT, VERSION, CompactFormatError, load_compact, main, save_compact,
                         tensors_identical)
from ssvi.layers import bayesian_layers, set_mode
from ssvi.models import create_model
from ssvi.subspace import random_mask, select_sparse_layers, set_masks


def ssvi_model(width: float, density: float, seed: int = 0) -> torch.nn.Module:
    model = create_model("resnet18", num_classes=10, width=width, in_channels=3, bayesian=True)
    layers = select_sparse_layers(model)
    gen = torch.Generator().manual_seed(seed)
    set_masks(layers, {n: random_mask(layer.mask.shape, density, gen) for n, layer in layers.items()})
    return model


def assert_identical(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key
        # bit level, so signed zeros count too
        assert torch.equal(a[key].reshape(-1).view(torch.uint8), b[key].reshape(-1).view(torch.uint8)), key
    assert tensors_identical(a, b)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # many small tensor ops on 2 shared cores: one torch thread is several times faster here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def file_size(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


@pytest.fixture(scope="module")
def small_ssvi():
    torch.manual_seed(0)
    model = ssvi_model(width=0.25, density=0.1)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model(torch.randn(8, 3, 16, 16))
    return model


def test_round_trip_ssvi_model_is_bit_identical(small_ssvi, tmp_path):
    state = small_ssvi.state_dict()
    save_compact(state, tmp_path / "c.pt", extra={"config": {"method": "ssvi", "density": 0.1, "shape": (3, 16)}})
    loaded, extra = load_compact(tmp_path / "c.pt")
    assert_identical(state, loaded)
    assert extra == {"config": {"method": "ssvi", "density": 0.1, "shape": (3, 16)}}
    assert loaded._metadata == state._metadata
    # every sparsified layer went into the sparse section, the dense first conv did not
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    assert payload["format"] == FORMAT and payload["version"] == VERSION
    sparse_names = set(select_sparse_layers(small_ssvi))
    assert {p.rstrip(".") for p in payload["sparse"]} == sparse_names
    first = next(iter(bayesian_layers(small_ssvi)))
    assert f"{first}.weight_mu" in payload["dense"] and f"{first}.mask" in payload["dense"]
    assert all(isinstance(v, torch.Tensor) for v in payload["dense"].values())


def test_round_trip_all_dense_models(tmp_path):
    for bayesian in (True, False):
        model = create_model("resnet18", num_classes=10, width=0.25, bayesian=bayesian)
        state = model.state_dict()
        save_compact(state, tmp_path / "d.pt")
        loaded, extra = load_compact(tmp_path / "d.pt")
        assert_identical(state, loaded)
        assert extra == {}
        assert torch.load(tmp_path / "d.pt", weights_only=True)["sparse"] == {}


def test_mean_mode_outputs_identical_after_reload(small_ssvi, tmp_path):
    save_compact(small_ssvi.state_dict(), tmp_path / "c.pt")
    fresh = create_model("resnet18", num_classes=10, width=0.25, bayesian=True)
    state, _ = load_compact(tmp_path / "c.pt")
    fresh.load_state_dict(state)
    x = torch.randn(4, 3, 16, 16)
    for m in (small_ssvi, fresh):
        m.eval()
        set_mode(m, "mean")
    with torch.no_grad():
        assert torch.equal(small_ssvi(x), fresh(x))


def test_size_ratio_full_width_resnet18(tmp_path, capsys):
    """compact / dense file size for the paper's CIFAR ResNet-18 (full width), d = 0.1 and 0.05."""
    model = create_model("resnet18", num_classes=10, width=1.0, bayesian=True)
    layers = select_sparse_layers(model)
    gen = torch.Generator().manual_seed(0)
    dense = None
    for density, bound in ((0.1, 0.15), (0.05, 0.10)):
        set_masks(layers, {n: random_mask(layer.mask.shape, density, gen) for n, layer in layers.items()})
        state = model.state_dict()
        dense = dense or file_size(state)  # torch.save of the plain state dict, as model.pt stores it
        save_compact(state, tmp_path / "c.pt")
        compact = (tmp_path / "c.pt").stat().st_size
        loaded, _ = load_compact(tmp_path / "c.pt")
        assert tensors_identical(state, loaded)
        ratio = compact / dense
        with capsys.disabled():
            print(f"\n[export] resnet18 width 1.0 d={density}: dense {dense / 2**20:.2f} MiB, "
                  f"compact {compact / 2**20:.2f} MiB, ratio {ratio:.4f}")
        assert ratio <= bound


def test_signed_zeros_and_nonzero_inactive_entries(tmp_path):
    layer_mask = torch.tensor([[True, False, False], [False, True, False]])
    mu = torch.tensor([[1.5, -0.0, 0.0], [0.0, -2.0, -0.0]])
    rho = torch.tensor([[-7.0, -0.0, -0.0], [-0.0, -6.0, -0.0]])  # all inactive -0.0
    state = {"a.weight_mu": mu, "a.weight_rho": rho, "a.mask": layer_mask,
             # invariant broken (inactive entry nonzero): must fall back to dense, still exact
             "b.weight_mu": torch.tensor([1.0, 3.0]), "b.weight_rho": torch.tensor([0.5, 0.0]),
             "b.mask": torch.tensor([True, False]),
             "c.weight_mu": torch.zeros(2, dtype=torch.float64), "c.weight_rho": torch.zeros(2, dtype=torch.float64),
             "c.mask": torch.zeros(2, dtype=torch.bool),  # no active weight at all
             "bn.num_batches_tracked": torch.tensor(7)}
    save_compact(state, tmp_path / "s.pt")
    loaded, _ = load_compact(tmp_path / "s.pt")
    assert_identical(state, loaded)
    payload = torch.load(tmp_path / "s.pt", weights_only=True)
    assert set(payload["sparse"]) == {"a.", "c."}
    assert payload["sparse"]["a."]["zero_signs"]["weight_rho"] == "neg"
    assert isinstance(payload["sparse"]["a."]["zero_signs"]["weight_mu"], torch.Tensor)
    # without signs: equal values, zeros come back as +0.0
    save_compact(state, tmp_path / "u.pt", signed_zeros=False)
    unsigned, _ = load_compact(tmp_path / "u.pt")
    assert all(torch.equal(state[k], unsigned[k]) for k in state)
    assert not torch.signbit(unsigned["a.weight_rho"][~layer_mask]).any()


def test_bad_files_give_clear_errors(small_ssvi, tmp_path):
    state = small_ssvi.state_dict()
    path = tmp_path / "c.pt"
    save_compact(state, path)
    raw = path.read_bytes()

    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CompactFormatError, match="corrupted"):
        load_compact(tmp_path / "trunc.pt")

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CompactFormatError, match="cannot read"):
        load_compact(tmp_path / "junk.pt")

    # one flipped byte inside the stored active values is caught by the checksum
    payload = torch.load(path, weights_only=True)
    values = next(iter(payload["sparse"].values()))["weight_mu"]
    needle = values.numpy().tobytes()[:32]
    at = raw.find(needle)
    assert at > 0
    flipped = bytearray(raw)
    flipped[at + 4] ^= 0x40
    (tmp_path / "flip.pt").write_bytes(bytes(flipped))
    with pytest.raises(CompactFormatError, match="checksum mismatch"):
        load_compact(tmp_path / "flip.pt")

    payload["version"] = 99
    torch.save(payload, tmp_path / "v99.pt")
    with pytest.raises(CompactFormatError, match="unsupported compact format version 99"):
        load_compact(tmp_path / "v99.pt")

    torch.save({"config": {}, "model": state}, tmp_path / "model.pt")  # a plain model.pt
    with pytest.raises(CompactFormatError, match="not a compact checkpoint"):
        load_compact(tmp_path / "model.pt")

    with pytest.raises(TypeError, match="plain data"):
        save_compact(state, tmp_path / "x.pt", extra={"obj": object()})


def test_cli_exports_a_run_directory(small_ssvi, tmp_path, capsys):
    state = small_ssvi.state_dict()
    config = {"method": "ssvi", "density": 0.1, "width": 0.25, "extra": {}}
    torch.save({"config": config, "model": state}, tmp_path / "model.pt")
    assert main(["--run", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ratio" in out and "model_compact.pt" in out
    loaded, extra = load_compact(tmp_path / "model_compact.pt")
    assert_identical(state, loaded)
    assert extra == {"config": config}
    assert (tmp_path / "model_compact.pt").stat().st_size < 0.5 * (tmp_path / "model.pt").stat().st_size
    with pytest.raises(UserError, match="holds no final model"):
        main(["--run", str(tmp_path / "missing")])


# --------------------------------------------------------------------------------------------
# finished runs keep the compact format
# --------------------------------------------------------------------------------------------

def test_a_finished_run_keeps_its_final_posterior_compact_and_bit_identical(tmp_path, monkeypatch):
    from ssvi import results
    from ssvi.config import RunConfig
    from ssvi.rundir import load_final
    from ssvi.trainer import run as train
    kept = {}
    real = results.save_final

    def capture(out, state_dict, final_state):
        kept["state"] = {k: v.clone() for k, v in state_dict.items()}
        return real(out, state_dict, final_state)

    monkeypatch.setattr(results, "save_final", capture)
    cfg = RunConfig.from_dict({"method": "ssvi", "width": 0.125, "image_size": 8, "epochs": 2, "delta_t": 3,
                               "threads": 1, "num_samples": 2})
    metrics = train(cfg, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.suffix == ".pt") == ["model_compact.pt",
                                                                                          "predictions.pt"]
    state, extra = load_final(tmp_path / "run")
    assert_identical(kept["state"], state)
    assert extra["epoch"] == 2 and extra["config"] == cfg.to_dict() and len(extra["history"]) == 2
    assert metrics["files"]["model_compact.pt"]["bytes"] == (tmp_path / "run" / "model_compact.pt").stat().st_size
    # the dense copy of `ssvi export --dense` is the same state dict
    assert main(["--run", str(tmp_path / "run"), "--dense", str(tmp_path / "dense.pt")]) == 0
    assert_identical(kept["state"], torch.load(tmp_path / "dense.pt", weights_only=False)["model"])


def test_posthoc_from_a_compact_dense_vi_run_equals_posthoc_from_the_legacy_layout(tmp_path):
    import json

    from ssvi.config import RunConfig
    from ssvi.rundir import load_final
    from ssvi.trainer import run as train
    tiny = {"width": 0.125, "image_size": 8, "threads": 1, "num_samples": 2}
    dense = tmp_path / "dense"
    train(RunConfig.from_dict({**tiny, "method": "dense_vi", "epochs": 1}), dense)
    legacy = tmp_path / "legacy"  # the same run as older versions kept it: a dense model.pt, no file records
    legacy.mkdir()
    state, extra = load_final(dense)
    torch.save({"config": extra["config"], "model": state}, legacy / "model.pt")
    metrics = json.loads((dense / "metrics.json").read_text())
    del metrics["files"]
    (legacy / "metrics.json").write_text(json.dumps(metrics))
    results = {}
    for name, source in (("compact", dense), ("legacy", legacy)):
        out = tmp_path / f"posthoc_{name}"
        results[name] = train(RunConfig.from_dict({**tiny, "method": "posthoc", "epochs": 1, "density": 0.2,
                                                   "init_from": str(source)}), out)
    assert torch.equal(torch.load(tmp_path / "posthoc_compact" / "predictions.pt")["sample_probs"],
                       torch.load(tmp_path / "posthoc_legacy" / "predictions.pt")["sample_probs"])
    for key in ("acc", "nll", "ece", "train_flops", "layer_densities"):
        assert results["compact"][key] == results["legacy"][key], key
