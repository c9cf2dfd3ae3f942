"""How much does tiling change LIR's output? Tiled-vs-whole-image PSNR on Kodak24.

LIR has global operations (channel attention pools over the whole map; patch attention mixes
pixels strided across the whole map), so restoring tile by tile gives a slightly different
result from restoring the whole image at once. This measures the difference for several tile
sizes and overlaps: for each image the whole-image output is the reference, and the tiled
output's PSNR against it is reported (higher is closer; the defaults should keep >= 40 dB).

    python benchmarks/tile_quality.py                                 # default denoise model, all 24 images
    python benchmarks/tile_quality.py --weights W.safetensors --images 4 --tiles 256 384 --overlaps 32

Images: ../shared/datasets/Kodak24 (768×512 / 512×768 PNG; research copy, not shipped). For the
denoise task the input is the image with Gaussian noise of --sigma/255 added (seed = image index),
so the network sees what it was trained for; other tasks take the image as it is.
Prints a markdown table: tile × overlap → mean / min PSNR (dB) and seconds per image.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lir.restorer import load_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "Kodak24"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two float images in [0, 1] (inf when equal)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main() -> None:
    """Run the measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a .safetensors checkpoint (default: the task's published model)")
    parser.add_argument("--task", default="denoise")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=24, help="use the first N images (default 24)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[128, 192, 256, 384, 512])
    parser.add_argument("--overlaps", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--sigma", type=float, default=25.0, help="noise added for the denoise task (of 255)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    restorer = load_model(args.task, weights=args.weights, device=args.device, dtype=args.dtype)
    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff", ".jpg"))
    files = files[: args.images]
    if not files:
        raise SystemExit(f"no images in {args.data}")
    print(f"model {restorer.name} (dim {restorer.config.dim}), {restorer.device}, {restorer.dtype}; "
          f"{len(files)} images from {args.data}", flush=True)

    combos = [(t, o) for t in args.tiles for o in args.overlaps if 2 * o < t]
    scores: dict[tuple[int, int], list[float]] = {c: [] for c in combos}
    seconds: dict[object, list[float]] = {c: [] for c in combos}
    seconds["whole"] = []
    for index, path in enumerate(files):
        clean = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]
        x = clean
        if args.task == "denoise":
            g = torch.Generator().manual_seed(index)
            x = (clean + torch.randn(clean.shape, generator=g) * args.sigma / 255).clamp(0, 1)
        start = time.perf_counter()
        whole = restorer(x, tile=None, progress=False)
        seconds["whole"].append(time.perf_counter() - start)
        for tile, overlap in combos:
            start = time.perf_counter()
            tiled = restorer(x, tile=tile, tile_overlap=overlap, progress=False)
            seconds[(tile, overlap)].append(time.perf_counter() - start)
            scores[(tile, overlap)].append(psnr(tiled, whole))
        print(f"{path.name}: whole {seconds['whole'][-1]:.1f} s; "
              + ", ".join(f"{t}/{o}: {scores[(t, o)][-1]:.1f} dB" for t, o in combos), flush=True)

    print()
    print(f"Tiled vs whole-image output, {len(files)} Kodak24 images, {restorer.name}, {restorer.device} "
          f"{str(restorer.dtype).removeprefix('torch.')} (whole image: {np.mean(seconds['whole']):.1f} s/image)")
    print()
    print("| tile | overlap | mean PSNR (dB) | min PSNR (dB) | s / image |")
    print("|---:|---:|---:|---:|---:|")
    for tile, overlap in combos:
        s = scores[(tile, overlap)]
        print(f"| {tile} | {overlap} | {np.mean(s):.2f} | {np.min(s):.2f} | {np.mean(seconds[(tile, overlap)]):.1f} |")


if __name__ == "__main__":
    main()
