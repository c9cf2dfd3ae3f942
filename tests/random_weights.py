"""Seeded random LIR networks for tests that need a model but not a trained one."""

from __future__ import annotations

import torch

from lir.network import LIR

#: The configuration of the small networks most tests restore with: fast, every block type present.
SMALL = dict(dim=16, left_blk_num=(1, 1), bottom_blk_num=1, right_blk_num=(1, 1))


def random_network(seed: int = 0, **config) -> LIR:
    """A seeded random LIR (eval mode) of ``config``.

    The zero-initialised scales (alpha, beta, gamma) are made random too, so every branch is active.
    """
    torch.manual_seed(seed)
    net = LIR(**config)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return net.eval()
