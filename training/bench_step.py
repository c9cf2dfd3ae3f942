#!/usr/bin/env python
"""Measure seconds per training step of LIR on this machine (CPU by default).

One step = forward + L1 loss + backward + AdamW + EMA update on a random batch, as in
``train.py`` (data loading is excluded: it is ~1 ms). Variants: memory format
(contiguous / channels_last) × precision (fp32 / bf16 autocast), optionally ``torch.compile``.

    python training/bench_step.py --dim 32 --blocks 1 --batch 8 --patch 128 --threads 2 --steps 5

The machine is shared: the load average is printed with the results; compare variants
measured in the same run (they are interleaved, best-of-N per variant).
"""

from __future__ import annotations

import os

# Passive OpenMP waiting: on a shared, oversubscribed CPU the default spin-waiting threads of
# a 2-thread torch job fight the other processes for the cores; measured here under load, one
# dim-32 training step took 7-30 s spinning and 2.1 s passive. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lir.network import LIR  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (after 2 warm-up steps)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best round counts")
    p.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base = LIR(dim=a.dim, left_blk_num=(a.blocks,) * 2, bottom_blk_num=a.blocks, right_blk_num=(a.blocks,) * 2)
    x = torch.rand(a.batch, 3, a.patch, a.patch)
    y = (x + 0.1 * torch.randn_like(x))
    variants = [(cl, bf, False) for cl in (False, True) for bf in (False, True)]
    if a.compile:
        variants += [(True, False, True), (True, True, True)]
    setups = {}
    for cl, bf, comp in variants:
        mf = torch.channels_last if cl else torch.contiguous_format
        m = copy.deepcopy(base).to(memory_format=mf)
        ema = copy.deepcopy(m)
        fwd = torch.compile(m) if comp else m
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=1e-4)
        setups[(cl, bf, comp)] = (m, ema, fwd, opt, x.to(memory_format=mf), y.to(memory_format=mf))

    def step(key):
        m, ema, fwd, opt, xi, yi = setups[key]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=key[1]):
            out = fwd(yi)
        loss = F.l1_loss(out.float(), xi)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(m.parameters()), 1e-3)

    best = {k: float("inf") for k in setups}
    for k in setups:
        for _ in range(2):
            step(k)
    for _ in range(a.rounds):
        for k in setups:
            t = time.perf_counter()
            for _ in range(a.steps):
                step(k)
            best[k] = min(best[k], (time.perf_counter() - t) / a.steps)
    n = sum(q.numel() for q in base.parameters())
    print(f"LIR dim {a.dim}, {a.blocks} block(s)/stage ({n / 1e6:.2f} M params), batch {a.batch}×{a.patch}², "
          f"{a.threads} threads, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")
    print("| memory format | precision | compile | s/step |\n|---|---|---|---|")
    for (cl, bf, comp), v in best.items():
        print(f"| {'channels_last' if cl else 'contiguous'} | {'bf16 autocast' if bf else 'fp32'} | "
              f"{'yes' if comp else 'no'} | {v:.3f} |")


if __name__ == "__main__":
    main()
