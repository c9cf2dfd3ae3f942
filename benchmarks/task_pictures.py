#!/usr/bin/env python
"""README before/after pictures for the deblur, derain and dehaze models.

The bundled sample (``examples/sample.png``: drawn from scratch, MIT, so it may ship) is degraded
by the task's *held-out* setting of ``training/degradations.py`` with a fixed seed, restored
through ``lir.restore`` exactly as a user would (uint8 in, uint8 out), and written as
``examples/<task>.png``: clean | degraded | restored, PSNR of each against the clean one.
It also prints the error over the sample's open sky (rows 0–63 left and right of the title):
its mean per channel (a colour cast) and its RMS about that mean (ghosts, blotches, banding);
``--draws N`` also averages that error, and the restored PSNR, over N other held-out draws, a
steadier measure than one.

    python benchmarks/task_pictures.py                       # every task with a published model
    python benchmarks/task_pictures.py --task deblur --weights /work/runs/deblur-dim32/ema.safetensors
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "benchmarks"))

import lir  # noqa: E402
from eval_common import to_tensor, to_uint8  # noqa: E402
from quickstart import psnr, side_by_side  # noqa: E402
from training.degradations import HELD_OUT_SEED_BASE, degrade  # noqa: E402

SEED = HELD_OUT_SEED_BASE + 7  # any held-out seed: training never draws these
DRAWS_SEED = SEED + 100  # first seed of --draws
# The sample's smooth sky without the title text (examples/make_sample.py draws it at x 150-215).
SKY = (slice(0, 64), np.r_[0:140, 220:384])


def degraded_sample(task: str, clean: Image.Image, seed: int = SEED) -> Image.Image:
    """``clean`` through the task's held-out degradation, quantised to 8 bits."""
    y = degrade(task, to_tensor(np.array(clean)), torch.Generator().manual_seed(seed), held_out=True)
    return Image.fromarray(to_uint8(y))


def sky_error(image: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, float]:
    """Error of ``image`` over :data:`SKY` in 8-bit levels: mean per channel, RMS about that mean."""
    err = image[SKY].astype(np.float64) - clean[SKY]
    mean = err.reshape(-1, 3).mean(0)
    return mean, float(np.sqrt(((err - mean) ** 2).mean()))


def main() -> None:
    """Degrade, restore, save one picture per task."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    published = sorted({m.task for m in lir.list_models()} - {"denoise"})
    parser.add_argument("--task", action="append", choices=["deblur", "derain", "dehaze"],
                        help=f"repeatable (default: {', '.join(published) or 'none published'})")
    parser.add_argument("--weights", help="a .safetensors checkpoint (only with a single --task)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "examples")
    parser.add_argument("--draws", type=int, default=0,
                        help="also average the sky error over this many other held-out draws")
    args = parser.parse_args()
    tasks = args.task or published
    if args.weights and len(tasks) != 1:
        parser.error("--weights needs exactly one --task")

    clean = Image.open(REPO / "examples" / "sample.png").convert("RGB")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        degraded = degraded_sample(task, clean)
        start = time.perf_counter()
        restored = lir.restore(degraded, task=task, weights=args.weights)
        seconds = time.perf_counter() - start
        out = args.out_dir / f"{task}.png"
        side_by_side([
            ("clean", clean),
            (f"{task} input (held-out): {psnr(degraded, clean):.2f} dB", degraded),
            (f"lir: {psnr(restored, clean):.2f} dB, {seconds:.1f} s", restored),
        ]).save(out)
        print(f"{task}: input {psnr(degraded, clean):.2f} dB -> restored {psnr(restored, clean):.2f} dB; wrote {out}")
        for name, image in (("input", degraded), ("restored", restored)):
            mean, rms = sky_error(np.array(image), np.array(clean))
            print(f"  sky error of the {name}: mean R/G/B {np.round(mean, 1)}, RMS about the mean {rms:.1f} levels")
        if args.draws:
            errors, psnrs = [], []
            for k in range(args.draws):
                restored_k = lir.restore(degraded_sample(task, clean, DRAWS_SEED + k), task=task, weights=args.weights)
                errors.append(sky_error(np.array(restored_k), np.array(clean)))
                psnrs.append(psnr(restored_k, clean))
            mean = np.mean([m for m, _ in errors], axis=0)
            rms = [r for _, r in errors]
            print(f"  over {args.draws} other draws, restored: {np.mean(psnrs):.2f} dB; sky mean R/G/B {np.round(mean, 1)}, "
                  f"RMS about the mean {np.mean(rms):.2f} levels (per draw {np.round(rms, 2).tolist()})")


if __name__ == "__main__":
    main()
