"""Compact sparse checkpoints: store only the active weights of sparse Bayesian layers.

A finished SSVI run keeps, for every sparsified Bayesian layer, a dense ``weight_mu`` and
``weight_rho`` that are exactly 0 outside the layer's boolean ``mask``; ``model.pt`` stores them
densely, so a model at density d is as large as the dense VI model. The compact format stores the
mask bit-packed and only the active values, so the file is about d times the dense one (CIFAR
ResNet-18, full width, random masks: 0.117x at d = 0.1, 0.073x at d = 0.05; 0.104x / 0.060x with
``signed_zeros=False``), and it loads back bit-identically:
same keys in the same order, same dtypes, shapes, devices and bytes (signed zeros included).

Usage::

    from ssvi.export import save_compact, load_compact

    save_compact(model.state_dict(), "model_compact.pt", extra={"config": cfg.to_dict()})
    state, extra = load_compact("model_compact.pt")
    model.load_state_dict(state)

    # a legacy run directory: writes DIR/model_compact.pt from DIR/model.pt, prints the sizes
    python -m ssvi.export --run DIR        # or ssvi.export.main(["--run", DIR])
    # a run made now keeps model_compact.pt already (with its training state as ``extra``); a dense copy:
    python -m ssvi export --run DIR --dense model_dense.pt

For a run directory, ``main`` keeps everything of ``model.pt`` but the state dict as ``extra``, so
``{**extra, "model": state}`` is the original ``model.pt`` content (``extra["config"]`` the run config).

File format (``torch.save`` of a plain dict; read with ``torch.load(weights_only=True)``)::

    {
      "format":  "ssvi-compact",
      "version": 1,
      "keys":    [every state-dict key, in the original order],
      "dense":   {key: tensor}                 # everything stored as is (BatchNorm, biases, dense
                                               # layers, Bayesian layers whose mask is all True)
      "sparse":  {prefix P: {                  # a Bayesian layer with keys P.weight_mu, P.weight_rho, P.mask
          "shape":      [mask shape],
          "active":     number of True mask entries,
          "mask_bits":  uint8 tensor, numpy.packbits(mask.flatten()) (big-endian bit order, zero padded),
          "weight_mu":  1-d tensor, mu[mask] (active values in flattened order, original dtype/device),
          "weight_rho": 1-d tensor, rho[mask],
          "zero_signs": {"weight_mu": s, "weight_rho": s},  # sign of the (zero) inactive entries:
                        # None = all +0.0, "neg" = all -0.0, or a uint8 tensor packbits(signbit) over
                        # the inactive entries in flattened order
      }},
      "checksums": {"dense/<key>" or "sparse/<P>/<field>": zlib.crc32 of the tensor's bytes},
      "metadata":  the state dict's ``_metadata`` (module versions) as a plain dict, or None,
      "extra":     the caller's ``extra`` (plain data: dict, list, tuple, str, int, float, bool, None, tensors),
    }

A Bayesian layer whose inactive mu/rho entries are not all zero (which the subspace never produces)
is stored densely, so the round trip is exact for every state dict. Files that are truncated,
corrupted (checksum mismatch), not in this format or of an unknown version raise
:class:`CompactFormatError` with a message saying which.
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import save_torch

FORMAT = "ssvi-compact"
VERSION = 1
COMPACT_MODEL = "model_compact.pt"
SOURCE_MODEL = "model.pt"  # = ssvi.trainer.FINAL_MODEL
BAYES_FIELDS = ("weight_mu", "weight_rho")


class CompactFormatError(ValueError):
    """The file is not a readable compact checkpoint of a supported version."""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _checksum(t: torch.Tensor) -> int | None:
    """crc32 of the tensor's raw bytes (None for non-strided tensors, which are not checked)."""
    if t.layout != torch.strided or t.device.type == "meta":
        return None
    data = t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy()
    return zlib.crc32(data)


def _check_plain(value: Any, where: str) -> None:
    """``extra`` must load with ``torch.load(weights_only=True)``: plain data and tensors only."""
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"{where}: dict key {k!r} is not plain data")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}; a compact checkpoint holds plain data only "
                    "(dict, list, tuple, str, int, float, bool, None, tensors)")


def _pack(bits: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(bits.detach().reshape(-1).cpu().numpy()))


def _unpack(packed: torch.Tensor, count: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed.numpy(), count=count).astype(bool))


def _sparse_prefixes(state_dict: dict) -> list[str]:
    """Prefixes P with tensors P.weight_mu, P.weight_rho (same shape) and a bool P.mask."""
    prefixes = []
    for key, mask in state_dict.items():
        if key != "mask" and not key.endswith(".mask"):
            continue
        prefix = key[: -len("mask")]
        mu, rho = state_dict.get(prefix + "weight_mu"), state_dict.get(prefix + "weight_rho")
        tensors = (mask, mu, rho)
        if not all(isinstance(t, torch.Tensor) and t.layout == torch.strided for t in tensors):
            continue
        if mask.dtype != torch.bool or mu.shape != mask.shape or rho.shape != mask.shape:
            continue
        prefixes.append(prefix)
    return prefixes


def _zero_signs(inactive: torch.Tensor) -> Any:
    """None (all +0), "neg" (all -0) or packed sign bits; inactive values are known to be zero."""
    if not (inactive.is_floating_point() or inactive.is_complex()):
        return None
    if inactive.is_complex():  # signs of both parts: not worth a special case, caller stores densely
        raise ValueError("complex Bayesian weights")
    signs = torch.signbit(inactive)
    n_neg = int(signs.sum())
    if n_neg == 0:
        return None
    if n_neg == signs.numel():
        return "neg"
    return _pack(signs)


def _encode_layer(mask: torch.Tensor, mu: torch.Tensor, rho: torch.Tensor, signed_zeros: bool) -> dict | None:
    """The sparse record of one layer, or None when it must be stored densely."""
    if bool(mask.all()):
        return None
    flat_mask = mask.reshape(-1)
    record: dict[str, Any] = {"shape": list(mask.shape), "active": int(flat_mask.sum()),
                              "mask_bits": _pack(flat_mask), "zero_signs": {}}
    for name, value in zip(BAYES_FIELDS, (mu, rho)):
        flat = value.detach().reshape(-1)
        inactive = flat[~flat_mask.to(flat.device)]
        if not bool((inactive == 0).all()):  # nonzero or NaN outside the mask: keep the layer dense
            return None
        try:
            record["zero_signs"][name] = _zero_signs(inactive) if signed_zeros else None
        except ValueError:
            return None
        record[name] = flat[flat_mask.to(flat.device)].clone()  # own compact storage
    return record


def _decode_layer(prefix: str, record: dict) -> dict[str, torch.Tensor]:
    shape, active = torch.Size(record["shape"]), int(record["active"])
    numel = shape.numel()
    flat_mask = _unpack(record["mask_bits"], numel)
    if int(flat_mask.sum()) != active:
        raise CompactFormatError(f"layer {prefix!r}: mask has {int(flat_mask.sum())} active entries, "
                                 f"header says {active} (corrupted file)")
    out = {}
    for name in BAYES_FIELDS:
        values = record[name]
        if values.dim() != 1 or values.numel() != active:
            raise CompactFormatError(f"layer {prefix!r}: {name} holds {values.numel()} values for "
                                     f"{active} active weights (corrupted file)")
        mask = flat_mask.to(values.device)
        signs = record["zero_signs"][name]
        full = torch.full((numel,), -0.0 if signs == "neg" else 0, dtype=values.dtype, device=values.device)
        if isinstance(signs, torch.Tensor):
            negative = torch.zeros(numel, dtype=torch.bool)
            negative[~flat_mask] = _unpack(signs, numel - active)
            full[negative.to(values.device)] = -0.0
        full[mask] = values
        out[prefix + name] = full.view(shape)
    out[prefix + "mask"] = flat_mask.view(shape).to(record["weight_mu"].device)
    return out


# --------------------------------------------------------------------------------------------
# API
# --------------------------------------------------------------------------------------------

def save_compact(state_dict: dict[str, torch.Tensor], path: str | os.PathLike, extra: dict | None = None, *,
                 signed_zeros: bool = True) -> dict:
    """Write ``state_dict`` (and plain-data ``extra``) to ``path`` in the compact format, atomically
    (:func:`ssvi.files.save_torch`); return the written file's size and SHA-256.

    ``signed_zeros=False`` drops the signs of the inactive zeros (loaded as +0.0: still ``torch.equal``
    and the same model outputs, not byte-identical), saving up to 2 bits per inactive weight.
    """
    _check_plain(extra, "extra")
    prefixes = _sparse_prefixes(state_dict)  # state-dict order: deterministic files
    dense: dict[str, Any] = {}
    sparse: dict[str, dict] = {}
    checksums: dict[str, int] = {}
    taken: set[str] = set()
    for prefix in prefixes:
        record = _encode_layer(state_dict[prefix + "mask"], state_dict[prefix + "weight_mu"],
                               state_dict[prefix + "weight_rho"], signed_zeros)
        if record is not None:
            sparse[prefix] = record
            taken.update(prefix + f for f in (*BAYES_FIELDS, "mask"))
            for name in ("mask_bits", *BAYES_FIELDS):
                checksums[f"sparse/{prefix}/{name}"] = _checksum(record[name])
            for name, signs in record["zero_signs"].items():
                if isinstance(signs, torch.Tensor):
                    checksums[f"sparse/{prefix}/zero_signs/{name}"] = _checksum(signs)
    for key, value in state_dict.items():
        if key in taken:
            continue
        if isinstance(value, torch.Tensor):
            dense[key] = value.detach()
            if (crc := _checksum(value)) is not None:
                checksums[f"dense/{key}"] = crc
        else:
            _check_plain(value, f"state_dict[{key!r}]")
            dense[key] = value
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        metadata = {k: dict(v) for k, v in metadata.items()}
    payload = {"format": FORMAT, "version": VERSION, "keys": list(state_dict), "dense": dense, "sparse": sparse,
               "checksums": checksums, "metadata": metadata, "extra": extra}
    return save_torch(path, payload)


def _verify_checksums(payload: dict) -> None:
    def check(label: str, t: torch.Tensor) -> None:
        expected = payload["checksums"].get(label)
        if expected is not None and _checksum(t) != expected:
            raise CompactFormatError(f"checksum mismatch for {label}: the file is corrupted")

    for key, value in payload["dense"].items():
        if isinstance(value, torch.Tensor):
            check(f"dense/{key}", value)
    for prefix, record in payload["sparse"].items():
        for name in ("mask_bits", *BAYES_FIELDS):
            check(f"sparse/{prefix}/{name}", record[name])
        for name, signs in record["zero_signs"].items():
            if isinstance(signs, torch.Tensor):
                check(f"sparse/{prefix}/zero_signs/{name}", signs)


def load_compact(path: str | os.PathLike, map_location: Any = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict with the original keys, order, dtypes, shapes and exact values; ``extra``).

    ``map_location`` is passed to ``torch.load`` (e.g. ``"cpu"`` for a file written on a GPU).
    ``extra`` is ``{}`` when the file was saved without one.
    """
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # truncated zip, garbage bytes, pickled classes, ...
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise CompactFormatError(f"{path}: cannot read as a compact checkpoint (corrupted or not a torch file): "
                                 f"{type(error).__name__}: {first_line}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CompactFormatError(f"{path}: not a compact checkpoint (no format marker {FORMAT!r}); "
                                 "a plain model.pt is read with torch.load")
    version = payload.get("version")
    if version != VERSION:
        raise CompactFormatError(f"{path}: unsupported compact format version {version!r} "
                                 f"(this code reads version {VERSION})")
    try:
        _verify_checksums(payload)
        parts: dict[str, Any] = dict(payload["dense"])
        for prefix, record in payload["sparse"].items():
            parts.update(_decode_layer(prefix, record))
        keys = payload["keys"]
        missing, unknown = set(keys) - set(parts), set(parts) - set(keys)
        if missing or unknown:
            raise CompactFormatError(f"{path}: key list does not match the stored tensors "
                                     f"(missing {sorted(missing)[:5]}, unlisted {sorted(unknown)[:5]})")
        state = OrderedDict((k, parts[k]) for k in keys)
    except CompactFormatError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CompactFormatError(f"{path}: malformed compact checkpoint: {type(error).__name__}: {error}") from error
    if payload.get("metadata") is not None:
        metadata = OrderedDict((k, dict(v)) for k, v in payload["metadata"].items())
        state._metadata = metadata  # type: ignore[attr-defined]
    extra = payload.get("extra")
    return state, ({} if extra is None else extra)


def tensors_identical(a: dict, b: dict) -> bool:
    """Same keys in the same order and, for every tensor, same dtype, shape, device and bytes."""
    if list(a) != list(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            if x != y:
                return False
            continue
        if x.dtype != y.dtype or x.shape != y.shape or x.device != y.device:
            return False
        if _checksum(x) is None:
            if not torch.equal(x, y):
                return False
        elif not torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
            return False
    return True


# --------------------------------------------------------------------------------------------
# Command line: python -m ssvi.export --run DIR, or main([...]) (meant for `python -m ssvi export`)
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssvi export",
                                     description="write DIR/model_compact.pt (compact sparse checkpoint) from a "
                                                 "legacy run's dense DIR/model.pt; runs made now keep their final "
                                                 "model compact already (--dense writes a dense copy of it)")
    parser.add_argument("--run", required=True, help="finished run directory (holds model.pt or model_compact.pt)")
    parser.add_argument("--out", help=f"output file (default: RUN/{COMPACT_MODEL})")
    parser.add_argument("--dense", metavar="FILE",
                        help="instead, write the run's final model as a dense torch file {'config', 'model'} (the "
                             "layout of legacy model.pt files, for tools that read plain state dicts)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the run config's threads)")
    parser.add_argument("--no-signed-zeros", action="store_true",
                        help="store inactive zeros as +0.0 (smaller; torch.equal but not byte-identical)")
    parser.add_argument("--no-verify", action="store_true", help="skip reloading and comparing the written file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``ssvi export``: a run directory's final model, read only after its records check every byte of it
    (:func:`ssvi.rundir.load_final`). A damaged, foreign or unwritable run is a UserError (one line from the
    command line)."""
    from .errors import UserError
    args = build_parser().parse_args(argv)
    run = Path(args.run)
    source, compact = run / SOURCE_MODEL, run / COMPACT_MODEL
    if not source.is_file() and not compact.is_file():
        raise UserError(f"{run} holds no final model ({SOURCE_MODEL} or {COMPACT_MODEL}); --run takes the directory "
                        "of a finished run")
    if args.dense or not source.is_file():
        return _dense_copy(args, compact)
    checkpoint = _read_legacy(run, source)
    state = checkpoint["model"]
    extra = {k: v for k, v in checkpoint.items() if k != "model"}
    _set_threads(args, extra)
    out = Path(args.out) if args.out else compact
    save_compact(state, out, extra=extra, signed_zeros=not args.no_signed_zeros)
    if not args.no_verify:
        loaded, loaded_extra = load_compact(out, map_location="cpu")
        same = tensors_identical(state, loaded) if not args.no_signed_zeros else (
            list(state) == list(loaded) and all(torch.equal(state[k], loaded[k]) if isinstance(state[k], torch.Tensor)
                                                else state[k] == loaded[k] for k in state))
        if not same or loaded_extra != extra:
            raise UserError(f"verification failed: {out} does not reload to {source}; the file system may be "
                            "damaging files: check it, then export again")
    before, after = source.stat().st_size, out.stat().st_size
    print(f"{source}: {before / 2**20:.2f} MiB -> {out}: {after / 2**20:.2f} MiB (ratio {after / before:.4f})")
    return 0


def _set_threads(args, extra: dict) -> None:
    """torch's CPU threads: --threads, else the run config's."""
    config = extra.get("config") if isinstance(extra.get("config"), dict) else {}
    if args.threads or config.get("threads"):
        torch.set_num_threads(args.threads or config["threads"])


def _read_legacy(run: Path, source: Path) -> dict:
    """A legacy run's dense ``model.pt`` ({"config", "model"}), checked against its records first; a damaged or
    foreign file is one error naming it."""
    from .errors import UserError
    from .rundir import METRICS, Damage, DamagedRunError, check_final_model, repair_advice
    check_final_model(run, source)
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, garbage bytes, pickled classes, ...
        reason = f"not a torch file of plain data: {(str(error).split('. ') or [type(error).__name__])[0]}"
        if not (run / METRICS).exists():  # no run of ours recorded it: some other tool's file
            raise UserError(f"{source} is not the final model of an ssvi run ({reason})") from None
        raise DamagedRunError(Damage(source, reason, repair_advice(run, source.name))) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise UserError(f"{source} is not the final model of an ssvi run (it holds no 'model' state dict)")
    return checkpoint


def _dense_copy(args, compact: Path) -> int:
    """A run that keeps its final model compact: report it, or write the dense copy asked for (--dense)."""
    from .rundir import load_final
    state, extra = load_final(compact.parent)
    _set_threads(args, extra)
    if not args.dense:
        print(f"{compact}: the run keeps its final model in the compact format already "
              f"({compact.stat().st_size / 2**20:.2f} MiB); --dense FILE writes a dense copy")
        return 0
    out = Path(args.dense)
    save_torch(out, {"config": extra.get("config"), "model": state})
    print(f"{compact}: {compact.stat().st_size / 2**20:.2f} MiB -> {out}: {out.stat().st_size / 2**20:.2f} MiB (dense)")
    return 0


if __name__ == "__main__":
    from .cli import main as cli_main
    sys.exit(cli_main(["export", *sys.argv[1:]]))
