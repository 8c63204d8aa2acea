"""Shared fixtures: small deterministic settings so the suite runs on 2 CPU cores."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    # runs with `threads: 1` call torch.set_num_threads, which would leak into later tests
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
