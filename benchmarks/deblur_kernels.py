#!/usr/bin/env python
"""Deblur gain per kernel family: one fixed kernel of each kind, the same for every checkpoint.

``eval_synthetic.py`` mixes kernel families inside each row; this probe takes them apart, so a
training change that helps one family and costs another shows. Each of the first N Kodak24
images (its top-left 384×384) is blurred by one fixed kernel per row, with sensor noise
σ = 1/255 and 8-bit quantisation, from a held-out seed; the random trajectories are drawn once,
so every checkpoint sees identical inputs. PSNR (RGB, 8-bit) of the input, and gain per
checkpoint::

    python benchmarks/deblur_kernels.py --weights old.safetensors new.safetensors [--count 12]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_common import (  # noqa: E402
    DATASETS,
    environment_line,
    list_images,
    load_network,
    load_rgb,
    markdown_table,
    psnr,
    run_network,
    to_tensor,
    to_uint8,
)

import torch  # noqa: E402

from training.degradations import (  # noqa: E402
    HELD_OUT_SEED_BASE,
    camera_shake_kernel,
    defocus_kernel,
    gaussian_kernel,
    linear_motion_kernel,
)
from training.degradations import _blur_noise_quantize  # noqa: E402

CROP = 384


def probe_kernels() -> dict[str, torch.Tensor]:
    """The fixed kernels, one per row (trajectories from a held-out seed)."""
    g = torch.Generator().manual_seed(HELD_OUT_SEED_BASE + 77)
    return {
        "Gaussian σ 1.5 px": gaussian_kernel(1.5, 1.5, 0.0),
        "defocus r 3 px": defocus_kernel(3.0),
        "linear motion 10 px": linear_motion_kernel(g, 10.0, 0.7),
        "camera shake 10 px": camera_shake_kernel(g, 10.0),
        "camera shake 27 px": camera_shake_kernel(g, 27.0),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="+", required=True, help="deblur .safetensors checkpoints")
    p.add_argument("--count", type=int, default=12, help="first N Kodak24 images")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    models = [load_network(w, "deblur")[0] for w in a.weights]
    cleans = [load_rgb(f)[:CROP, :CROP] for f in list_images(DATASETS / "Kodak24")[: a.count]]
    noise = torch.Generator().manual_seed(HELD_OUT_SEED_BASE + 78)
    rows = []
    for name, k in probe_kernels().items():
        inputs = [to_uint8(_blur_noise_quantize(to_tensor(c), k[None], torch.ones(1), noise)) for c in cleans]
        p_in = float(np.mean([psnr(y, c) for y, c in zip(inputs, cleans)]))
        gains = []
        for m in models:
            p_out = np.mean([psnr(to_uint8(run_network(m, to_tensor(y))), c) for y, c in zip(inputs, cleans)])
            gains.append(f"{p_out - p_in:+.2f}")
        rows.append([name, f"{p_in:.2f}", *gains])
        print(" | ".join(rows[-1]), flush=True)
    header = ["kernel", "input PSNR", *(f"gain `{Path(w).name}`" for w in a.weights)]
    print(markdown_table(header, rows))
    print(f"\n_Kodak24 first {len(cleans)} images, top-left {CROP}², noise σ 1/255; {environment_line(a.threads)}._")
    return 0


if __name__ == "__main__":
    sys.exit(main())
