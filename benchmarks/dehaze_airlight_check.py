#!/usr/bin/env python
"""Is the dehazer's sky cast caused by the airlight's tint? (figures in the dehaze model card)

Hazes the README sample exactly as ``benchmarks/task_pictures.py`` does (same held-out draw), then
again with the same transmission but a neutral airlight (the drawn one's mean level in every
channel), restores both through ``lir.restore`` and prints PSNR and the error over the sample's
open sky as ``task_pictures.py`` measures it (mean per channel, RMS about that mean). It also
prints how much of the scene is left in the hazy sky, t·(J − A), next to the airlight's tint: where
the tint is the larger, the sky's colour cannot be told apart from the airlight's.

    python benchmarks/dehaze_airlight_check.py [--weights X.safetensors]
"""

from __future__ import annotations

import argparse
import sys
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
from quickstart import psnr  # noqa: E402
from task_pictures import SEED, SKY, sky_error  # noqa: E402
from training.degradations import draw_haze, quantize_8bit  # noqa: E402


def main() -> None:
    """Restore the sample under the drawn and the neutral airlight; print the sky's errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a .safetensors checkpoint (default: the published one)")
    args = parser.parse_args()

    clean = np.array(Image.open(REPO / "examples" / "sample.png").convert("RGB"))
    x = to_tensor(clean)
    t, drawn = draw_haze(torch.Generator().manual_seed(SEED), *x.shape[-2:], held_out=True)
    neutral = drawn.mean().expand_as(drawn)
    print(f"sky transmission {t[0, 0][SKY].mean():.3f}")
    # What a dehazer has to go on in the sky: the scene's share of the hazy pixel, t·(J − A),
    # against the airlight's own tint (A minus the neutral one), in 8-bit levels.
    signal = (t * (x - drawn))[0].permute(1, 2, 0).numpy()[SKY].reshape(-1, 3).mean(0) * 255
    print(f"sky signal t(J - A), mean R/G/B {np.round(signal, 1)}; "
          f"airlight tint {np.round((drawn - neutral).flatten().numpy() * 255, 1)}")
    for name, a in (("drawn airlight", drawn), ("neutral airlight", neutral)):
        hazy = to_uint8(quantize_8bit(x * t + a * (1.0 - t)))
        restored = lir.restore(hazy, task="dehaze", weights=args.weights)
        mean, rms = sky_error(restored, clean)
        print(f"{name:16s} A={np.round(a.flatten().numpy(), 3)}  sky error mean R/G/B {np.round(mean, 1)}, "
              f"RMS about it {rms:.1f}  PSNR {psnr(restored, clean):.2f} dB")


if __name__ == "__main__":
    main()
