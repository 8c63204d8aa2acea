"""Benchmark plumbing: reference path == production path, sparse routes == dense masked route, bench JSON."""

import contextlib
import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssvi.bench import JSON_KEYS, SparseLRTLayer, run_benchmark, verify_sparse_route
from ssvi.layers import BayesConv2d, BayesianLayer, BayesLinear, bayesian_layers, inverse_softplus, set_mode, total_kl
from ssvi.models import create_model
from ssvi.reference import reference_path, reference_total_kl
from ssvi.subspace import random_mask, select_sparse_layers, set_masks, zero_inactive

REPO = Path(__file__).resolve().parent.parent

PRIOR_STD = 0.005
BETA = 1e-3  # large enough that the KL's gradient is a visible part of every parameter's


def _small_sparse_model(dtype=torch.float32):
    model = create_model("resnet18", num_classes=10, width=0.125, bayesian=True)
    layers = select_sparse_layers(model)
    gen = torch.Generator().manual_seed(1)
    set_masks(layers, {n: random_mask(l.mask.shape, 0.3, gen) for n, l in layers.items()})
    with torch.no_grad():  # wider posteriors so the variance path matters numerically
        for layer in bayesian_layers(model).values():
            layer.weight_rho.copy_(inverse_softplus(torch.rand_like(layer.weight_rho) * 0.05 + 0.01))
    zero_inactive(layers)
    return model.to(dtype)


def _loss_and_grads(model, x, y, kl_fn, reference: bool):
    torch.manual_seed(123)
    with reference_path(model) if reference else contextlib.nullcontext():
        out = model(x)
        kl = kl_fn(model, PRIOR_STD)
        loss = F.cross_entropy(out, y) + BETA * kl
        model.zero_grad(set_to_none=True)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), kl.detach(), grads


# float64: rounding differences (fused vs unfused ops) stay far below the tolerance and no ReLU input
# changes sign, so any semantic difference between the paths fails; float32: what the benchmark runs
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["float64", "float32"])
def test_reference_path_matches_production(dtype, rtol):
    production = _small_sparse_model(dtype)
    reference = copy.deepcopy(production)
    x, y = torch.randn(4, 3, 16, 16, dtype=dtype), torch.randint(0, 10, (4,))
    out_p, kl_p, grads_p = _loss_and_grads(production, x, y, total_kl, reference=False)
    out_r, kl_r, grads_r = _loss_and_grads(reference, x, y, reference_total_kl, reference=True)
    assert torch.allclose(out_r, out_p, rtol=rtol / 10, atol=rtol / 100)
    assert torch.allclose(kl_r, kl_p, rtol=rtol / 100)
    assert grads_r.keys() == grads_p.keys()
    for name, g in grads_p.items():
        scale = g.abs().max().clamp_min(1e-30)
        assert float((grads_r[name] - g).abs().max() / scale) < rtol, name
    # SSVI's addition step needs the dense dL/dmu: the reference keeps it (inactive entries included)
    sparse_name = next(n for n, l in select_sparse_layers(production).items() if not l.mask.all())
    layer = dict(reference.named_modules())[sparse_name]
    assert grads_r[f"{sparse_name}.weight_mu"][~layer.mask].abs().max() > 0
    assert grads_r[f"{sparse_name}.weight_rho"][~layer.mask].abs().max() == 0


def test_reference_path_is_independent_and_restored(monkeypatch):
    model = _small_sparse_model()
    x = torch.randn(2, 3, 16, 16)
    set_mode(model, "mean")
    with torch.no_grad():
        expected = model(x)

        def broken(self, x):
            raise AssertionError("production forward used inside reference_path")

        with monkeypatch.context() as m:
            m.setattr(BayesianLayer, "forward", broken)
            m.setattr(BayesianLayer, "kl", broken)
            with reference_path(model):
                got = model(x)
                assert torch.isfinite(model.linear.kl(PRIOR_STD))
        assert torch.allclose(got, expected, rtol=1e-6, atol=1e-7)
        for layer in bayesian_layers(model).values():
            assert "forward" not in layer.__dict__ and "kl" not in layer.__dict__
        assert torch.equal(model(x), expected)


def _masked_layer(layer: BayesianLayer, density: float) -> BayesianLayer:
    with torch.no_grad():
        layer.weight_mu.normal_(0, 0.1)
        layer.weight_rho.copy_(inverse_softplus(torch.rand_like(layer.weight_rho) * 0.2 + 0.05))
        layer.mask.copy_(random_mask(layer.mask.shape, density, torch.Generator().manual_seed(2)))
    zero_inactive({"layer": layer})
    return layer


@pytest.mark.parametrize("kind,layout", [("conv3x3", "csr"), ("conv3x3", "bsr"), ("conv1x1_stride2", "csr"),
                                         ("linear", "csr")])
def test_sparse_route_matches_dense_masked_route(kind, layout):
    if kind == "conv3x3":
        layer, x = BayesConv2d(8, 16, 3, padding=1, bias=False), torch.randn(4, 8, 10, 10)
    elif kind == "conv1x1_stride2":
        layer, x = BayesConv2d(8, 16, 1, stride=2, bias=False), torch.randn(4, 8, 10, 10)
    else:
        layer, x = BayesLinear(32, 10), torch.randn(6, 32)
    layer = _masked_layer(layer, 0.1)
    sparse = SparseLRTLayer(layer, layout, (2, 2) if layout == "bsr" else None)
    assert sparse.pattern.nnz == int(layer.mask.sum())
    with torch.no_grad():
        grad = torch.randn_like(layer(x))
    result = verify_sparse_route(layer, sparse, x.requires_grad_(), grad, seed=5)
    for key, value in result.items():
        if key.endswith("_rel_diff"):
            assert value < 1e-5, (key, result)
    # the sparse route computes gradients only for active weights
    assert sparse.mu.grad.shape == (int(layer.mask.sum()),)


def test_run_benchmark_tiny_is_json_with_documented_keys():
    record = run_benchmark(arch="resnet18", width=0.125, batch=8, image_size=16, steps=2, warmup=1,
                           sparse_routes=False)
    json.loads(json.dumps(record))
    assert set(record) == set(JSON_KEYS)
    assert record["sparse_routes"] is None
    for section in ("train_step", "eval"):
        for path in ("reference", "production"):
            stats = record[section][path]
            assert stats["n"] >= 2 and stats["median_s"] > 0 and stats["samples_per_s"] > 0
            assert stats["p25_s"] <= stats["median_s"] <= stats["p75_s"]
        assert record[section]["production_vs_reference"] > 0
        paired = [p / r for p, r in zip(record[section]["production"]["samples_s"],
                                        record[section]["reference"]["samples_s"])]
        assert min(paired) <= record[section]["paired_ratio_median"] <= max(paired)
    check = record["first_step_check"]
    assert check["loss_max_abs_diff"] < 1e-4 and check["grad_max_rel_l2_diff"] < 1e-2
    assert record["eval"]["output_max_abs_diff"] < 1e-4
    assert check["grad_parameters_missing"] == []
    assert record["options"]["density"] == 0.1 and record["machine"]["torch"] == torch.__version__
    assert record["model"]["sparse_layers"] > 0 and 0.09 < record["model"]["density_of_sparse_layers"] < 0.11


def test_kernel_route_and_kernel_steps_sections():
    record = run_benchmark(arch="resnet18", width=0.125, batch=8, image_size=8, steps=1, warmup=1,
                           micro_densities=(0.1,), micro_routes=("kernel",), micro_repeats=1, kernel_steps=True,
                           kernel_densities=(0.1,), kernel_step_repeats=2, delta_t=10)
    json.loads(json.dumps(record))
    for shape in record["sparse_routes"]["shapes"]:
        kernel = shape["routes"]["0.1"]["kernel"]
        assert kernel["max_rel_diff"] < 1e-5 and kernel["sparse_vs_dense"] > 0, shape["name"]
        assert kernel["layout"] == "kernel index" and kernel["active"] == kernel["stored_values"]
    steps = record["kernel_steps"]["per_density"]["0.1"]
    assert all(steps[route]["n"] == 2 for route in ("dense", "all", "auto"))
    for route in ("all", "auto"):
        ratio = steps[f"{route}_vs_dense"]
        # a tenth of the update phase's steps are dense: the whole-run ratio lies between the step ratio and 1
        assert min(ratio, 1.0) <= steps[f"{route}_whole_run_ratio"] <= max(ratio, 1.0)
    assert set(steps["auto_sparse_layers"]) <= set(steps["auto_choices"]) and steps["auto_choices"]


def test_bench_cli_options():
    from ssvi.bench import build_parser
    args = build_parser().parse_args(["--width", "0.25", "--no-sparse-routes", "--micro-routes", "csr,bsr_block",
                                      "--micro-densities", "0.1", "--threads", "1"])
    assert args.width == 0.25 and not args.sparse_routes and args.micro_routes == ["csr", "bsr_block"]
    assert args.micro_densities == [0.1] and args.threads == 1 and args.batch == 128 and args.density == 0.1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--micro-routes", "coo"])


def test_speed_variants_section_times_real_trainer_epochs():
    record = run_benchmark(arch="resnet18", width=0.125, batch=8, image_size=16, steps=1, warmup=1,
                           sparse_routes=False, speed_variants=("plain", "data_on_device", "bf16"),
                           speed_steps=2, speed_repeats=2)
    section = record["speed_variants"]
    assert set(section["variants"]) == {"plain", "data_on_device", "bf16"}
    for name, stats in section["variants"].items():
        assert stats["n"] == 2 and stats["median_s"] > 0 and stats["samples_per_s"] > 0, name
        assert stats["speedup_vs_plain"] > 0
        assert stats["host_syncs_in_one_epoch"] == {"checked": False,
                                                     "why": "only CUDA can detect host synchronisations"}
    variants = section["variants"]
    # same seed, same data: on a CPU keeping the data "on the device" changes nothing numerically,
    # bf16 moves the first-epoch loss by rounding only
    assert variants["data_on_device"]["first_epoch_loss_rel_diff_vs_plain"] == 0.0
    assert 0 < variants["bf16"]["first_epoch_loss_rel_diff_vs_plain"] < 0.05
    assert variants["bf16"]["overrides"] == {"precision": "bf16"}
    json.loads(json.dumps(record))


def test_speed_variant_option_parsing():
    from ssvi.bench import SPEED_VARIANTS, build_parser
    assert build_parser().parse_args(["--speed-variants", "all"]).speed_variants == list(SPEED_VARIANTS)
    assert build_parser().parse_args(["--speed-variants", "plain,fast"]).speed_variants == ["plain", "fast"]
    assert build_parser().parse_args([]).speed_variants == []
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--speed-variants", "fp8"])


def test_concurrency_section_runs_real_training_processes_side_by_side():
    record = run_benchmark(arch="resnet18", width=0.0625, batch=4, image_size=8, steps=1, warmup=1,
                           sparse_routes=False, speed_steps=2, speed_repeats=1, concurrency=(1, 2))
    section = record["concurrency"]
    assert [row["processes"] for row in section["levels"]] == [1, 2]
    for row in section["levels"]:
        # every process trained speed_repeats epochs of speed_steps batches of the batch size
        assert row["samples"] == row["processes"] * 1 * 2 * 4
        assert len(row["per_process_samples_per_s"]) == row["processes"]
        assert row["aggregate_samples_per_s"] == pytest.approx(row["samples"] / row["span_s"])
        assert row["threads_per_process"] >= 1
    assert section["levels"][0]["speedup_vs_one_process"] == 1.0
    assert record["options"]["concurrency"] == [1, 2]
    json.loads(json.dumps(record))


def test_concurrency_option_parsing():
    from ssvi.bench import build_parser
    assert build_parser().parse_args(["--concurrency", "1,2,4"]).concurrency == [1, 2, 4]
    assert build_parser().parse_args([]).concurrency == []
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--concurrency", "0,2"])


def test_the_command_line_prints_one_screen_and_writes_the_full_record_to_out(tmp_path, capsys):
    from ssvi.bench.cli import build_parser, main as bench_main
    out = tmp_path / "bench.json"
    args = ["--width", "0.125", "--batch", "4", "--image-size", "8", "--steps", "1", "--warmup", "1",
            "--no-sparse-routes", "--threads", "1"]
    assert bench_main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert 3 <= len(printed) <= 25 and "train_step" in printed[1] and "×" in printed[1]
    assert printed[-1].endswith("the full record: add --out FILE.json") and not list(tmp_path.iterdir())
    assert bench_main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"full record: {out}" and len(printed) <= 25
    record = json.loads(out.read_text())
    assert record["train_step"]["production_vs_reference"] > 0 and "notes" in record
    # and --help says so (it once promised the JSON on stdout)
    help_text = " ".join(build_parser().format_help().split())
    assert "JSON to stdout" not in help_text
    assert "a one-screen summary to stdout; the full JSON record is written only to the file --out names" in help_text


def test_performance_page_gives_the_duration_of_its_sparse_kernel_benchmark_as_recorded():
    """docs/performance.md quotes how long its sparse-kernel command ran: the record's wall_time_s."""
    record = json.loads((REPO / "results" / "measured" / "cpu_sparse_kernels.json").read_text())
    page = " ".join((REPO / "docs" / "performance.md").read_text().split())
    seconds = round(record["wall_time_s"])
    assert "--out results/measured/cpu_sparse_kernels.json" in page
    assert f"**{seconds} s** ({seconds // 60} min {seconds % 60} s)" in page
