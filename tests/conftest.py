"""Shared fixtures: small deterministic settings so the suite runs on 2 CPU cores."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
