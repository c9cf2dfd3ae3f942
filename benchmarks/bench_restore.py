"""Benchmark a tiled restore on the CPU: megapixels per second and peak memory (RSS).

    python benchmarks/bench_restore.py                    # 4000×3000, default config, tile="auto"
    python benchmarks/bench_restore.py --size 512x384     # quick smoke run
    python benchmarks/bench_restore.py --tile 384 --threads 2 --weights model.safetensors

The network is the default configuration (dim 48, 7.3 M parameters) with random weights unless
--weights is given: speed and memory do not depend on the weights' values. The input is a synthetic
8-bit RGB picture (smooth colour gradients plus noise) held as a numpy array, and the result comes
back as one, as in `lir.restore(np_array)`. The target is a peak RSS of at most 2 GB for 4000×3000.
Peak RSS is `resource.getrusage(RUSAGE_SELF).ru_maxrss` for the whole process (Python, torch,
the input and output images, the canvas, and the network's activations).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch

from lir import tiling
from lir.network import LIR
from lir.restorer import Restorer, load_model


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An 8-bit RGB test picture: smooth colour gradients plus noise (made row block by row block)."""
    rng = np.random.default_rng(seed)
    out = np.empty((height, width, 3), dtype=np.uint8)
    x = np.linspace(0, 1, width, dtype=np.float32)
    for y0 in range(0, height, 256):
        y = np.linspace(y0 / height, min(y0 + 256, height) / height, min(256, height - y0), dtype=np.float32)[:, None]
        base = np.stack([0.5 + 0.4 * np.sin(6 * x + 3 * y), y + 0 * x, 0.5 + 0.4 * np.cos(4 * x * y)], axis=2)
        noisy = base * 255 + rng.normal(0, 20, base.shape).astype(np.float32)
        out[y0 : y0 + len(y)] = noisy.clip(0, 255).astype(np.uint8)
    return out


def main() -> None:
    """Run one tiled restore and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT (default 4000x3000)")
    parser.add_argument("--tile", default="auto", help="tile size in pixels, 'auto' (default) or 'none'")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--weights", help="a .safetensors checkpoint (default: random default-config weights)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    tile = {"auto": "auto", "none": None}.get(args.tile, None if args.tile == "none" else args.tile)
    if tile not in ("auto", None):
        tile = int(tile)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.weights:
        restorer = load_model(weights=args.weights, device="cpu", dtype=args.dtype)
        what = args.weights
    else:
        torch.manual_seed(0)
        restorer = Restorer(LIR(), device="cpu", dtype=args.dtype, name="default config, random weights")
        what = restorer.name
    image = synthetic_image(height, width)

    padded_h, padded_w = tiling.valid_size(height), tiling.valid_size(width)
    chosen, batch = restorer._plan(padded_h, padded_w, 1, tile, args.overlap)
    tiles = len(tiling.plan_tiles(padded_h, padded_w, chosen, args.overlap))
    rss_before = peak_rss_bytes()
    print(f"{width}×{height} RGB uint8, {what}, cpu {args.dtype}, {torch.get_num_threads()} threads; "
          f"tile={args.tile} -> {chosen or 'whole image'} ({tiles} tiles, batch {batch}), overlap {args.overlap}",
          flush=True)

    start = time.perf_counter()
    out = restorer(image, tile=tile, tile_overlap=args.overlap, progress=None)
    seconds = time.perf_counter() - start
    assert out.shape == image.shape and out.dtype == image.dtype

    megapixels = width * height / 1e6
    peak = peak_rss_bytes()
    print(f"time {seconds:.1f} s, {megapixels / seconds:.3f} megapixels/s")
    print(f"peak RSS {peak / 2**30:.2f} GiB ({peak / 1e9:.2f} GB; {rss_before / 2**30:.2f} GiB before the restore); "
          f"target <= 2 GB: {'met' if peak <= 2e9 else 'MISSED'}")


if __name__ == "__main__":
    main()
