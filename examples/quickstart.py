"""Quick start: add noise to the bundled sample, restore it with lir, save a side-by-side picture.

    python examples/quickstart.py                      # the bundled denoising model
    python examples/quickstart.py --weights my.safetensors --out side_by_side.png

Writes examples/quickstart.png: clean | noisy | restored, with the PSNR of each against the clean one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import lir

HERE = Path(__file__).resolve().parent


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of two 8-bit images, in dB."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def side_by_side(panels: list[tuple[str, Image.Image]]) -> Image.Image:
    """The panels next to each other, each with its caption underneath."""
    w, h = panels[0][1].size
    out = Image.new("RGB", (w * len(panels) + 8 * (len(panels) - 1), h + 22), "white")
    draw = ImageDraw.Draw(out)
    for i, (caption, img) in enumerate(panels):
        out.paste(img, (i * (w + 8), 0))
        draw.text((i * (w + 8) + 4, h + 5), caption, fill="black")
    return out


def main() -> None:
    """Degrade, restore, compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a .safetensors checkpoint (default: the bundled denoising model)")
    parser.add_argument("--sigma", type=float, default=25.0, help="noise level, of 255 (default 25)")
    parser.add_argument("--out", default=str(HERE / "quickstart.png"))
    args = parser.parse_args()

    clean = Image.open(HERE / "sample.png").convert("RGB")
    rng = np.random.default_rng(0)
    noisy_arr = np.asarray(clean, np.float64) + rng.normal(0, args.sigma, (clean.height, clean.width, 3))
    noisy = Image.fromarray(noisy_arr.round().clip(0, 255).astype(np.uint8))

    start = time.perf_counter()
    restored = lir.restore(noisy, task="denoise", weights=args.weights)  # a PIL image in, a PIL image out
    seconds = time.perf_counter() - start

    picture = side_by_side([
        ("clean", clean),
        (f"noisy (sigma {args.sigma:g}): {psnr(noisy, clean):.2f} dB", noisy),
        (f"lir: {psnr(restored, clean):.2f} dB, {seconds:.1f} s", restored),
    ])
    picture.save(args.out)
    print(f"noisy {psnr(noisy, clean):.2f} dB -> restored {psnr(restored, clean):.2f} dB in {seconds:.1f} s; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
