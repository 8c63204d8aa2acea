"""Provenance recorded with every result: git commit, library versions, device, host, time."""

from __future__ import annotations

import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "timm", "numpy", "scikit-learn", "pillow", "pandas", "snakemake")
REPO_ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> dict:
    """Commit of the checkout this package runs from, and whether it has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown (not a git checkout)", "dirty": None}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def provenance(device: torch.device) -> dict:
    return {"git": git_commit(), "versions": package_versions(), "python": platform.python_version(),
            "device": device_description(device), "host": socket.gethostname(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
