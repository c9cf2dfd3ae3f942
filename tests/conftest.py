"""Fixtures shared by the test modules (no network access)."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from lir.checkpoint import save_checkpoint
from random_weights import SMALL, random_network


@pytest.fixture(scope="session")
def make_weights(tmp_path_factory) -> Callable[..., str]:
    """``make_weights(**config)``: path of a checkpoint of a seeded random LIR of that configuration."""

    def make(**config) -> str:
        path = tmp_path_factory.mktemp("weights") / "random.safetensors"
        save_checkpoint(random_network(**config), path)
        return str(path)

    return make


@pytest.fixture(scope="module")
def weights(make_weights) -> str:
    """Path of a checkpoint of the seeded random `SMALL` network."""
    return make_weights(**SMALL)


@pytest.fixture(scope="module")
def torch_threads(request):
    """Torch's intra-op threads set to the module's ``TORCH_THREADS`` (default 1) for its tests.

    The test machine is small and shared: more threads than cores stall everything.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(getattr(request.module, "TORCH_THREADS", 1))
    yield
    torch.set_num_threads(before)
