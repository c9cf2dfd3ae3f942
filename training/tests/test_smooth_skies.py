"""Synthetic skies: pure, deterministic, on top, smooth and on the 8-bit grid."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from training.smooth_skies import paste_skies, sky  # noqa: E402


def _crops(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 128, 160, generator=torch.Generator().manual_seed(0))


def test_prob_zero_is_an_unchanged_copy() -> None:
    x = _crops()
    out = paste_skies(x, torch.Generator().manual_seed(1), 0.0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_pure_deterministic_and_on_top() -> None:
    x = _crops()
    before = x.clone()
    a = paste_skies(x, torch.Generator().manual_seed(2), 1.0)
    b = paste_skies(x, torch.Generator().manual_seed(2), 1.0)
    assert torch.equal(x, before), "input modified"
    assert torch.equal(a, b)
    # Crops are random floats and skies lie on the 8-bit grid, so no sky pixel equals the crop's.
    replaced = (a != x).any(dim=1)  # N×H×W
    # The horizon never comes above 0.1·H, so the top rows are sky in every crop...
    assert replaced[:, :12].all()
    # ...and what is replaced is a top part: no replaced pixel below a kept one in a column.
    for mask in replaced:
        assert torch.equal(mask.float().cummin(dim=0).values, mask.float())


def test_skies_are_smooth_8bit_images() -> None:
    for seed in range(8):
        s = sky(torch.Generator().manual_seed(seed), 128, 160)
        assert s.shape == (3, 128, 160) and s.min() >= 0 and s.max() <= 1
        assert torch.equal(torch.round(s * 255) / 255, s)
        # At most grain (σ ≤ 1/255) and a gentle gradient between neighbours: no edges.
        step = (s[:, 1:] - s[:, :-1]).abs().mean() * 255
        assert step < 4, f"seed {seed}: mean vertical step {step:.2f} levels"
