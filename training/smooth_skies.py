"""Synthetic smooth skies pasted over the top of clean training crops (``train.py --sky-prob``).

Why: the BSDS training photos are JPEGs with film grain, so they almost never show a clean,
smooth gradient. Restoring one is where the small models fail visibly: a dense-haze sky arrives
as a few 8-bit levels, and the dehazer amplifies the quantisation contours into blotches; a
derainer leaves faint streak ghosts on a smooth sky. A clean target with a smooth gradient
teaches both to output smooth regions. Nothing here is taken from an evaluation image.

Per crop, with probability ``prob``:

- the boundary: a horizon at U[0.25, 1.0]·H (1.0: the whole crop is sky) that wanders by up to
  U[0, 0.15]·H along a smooth random curve; the sky replaces the crop above it (a hard edge,
  like a skyline);
- the gradient: two colours, each channel U[0.05, 0.95], blended along a direction within ±30°
  of vertical with a power profile (exponent U[0.5, 2]);
- a glow with p = 0.3: a Gaussian blob (radius U[0.1, 0.5]·side, strength U[0.2, 0.8]) of a
  bright colour (channels U[0.7, 1]);
- clouds with p = 0.5: a smooth grey random field of amplitude U[0, 0.06];
- grain with p = 0.5: Gaussian noise σ U[0, 1]/255; then clip and 8-bit quantisation, as a
  saved photo has.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.degradations import _bernoulli, _smooth_field, _u, quantize_8bit


def sky(gen: torch.Generator, h: int, w: int) -> torch.Tensor:
    """One smooth sky, 3×H×W in [0, 1] on the 8-bit grid (distributions in the module docstring)."""
    yy = torch.linspace(0.0, 1.0, h).view(h, 1).expand(h, w)
    xx = torch.linspace(0.0, 1.0, w).view(1, w).expand(h, w)
    top = torch.tensor([_u(gen, 0.05, 0.95) for _ in range(3)]).view(3, 1, 1)
    bottom = torch.tensor([_u(gen, 0.05, 0.95) for _ in range(3)]).view(3, 1, 1)
    angle = math.radians(_u(gen, -30.0, 30.0))
    along = yy * math.cos(angle) + xx * math.sin(angle)
    along = (along - along.min()) / (along.max() - along.min()).clamp_min(1e-6)
    s = along ** _u(gen, 0.5, 2.0)
    img = top * (1 - s) + bottom * s
    if _bernoulli(gen, 0.3):
        cy, cx = _u(gen, 0.0, 1.0), _u(gen, 0.0, 1.0)
        radius = _u(gen, 0.1, 0.5)
        strength = _u(gen, 0.2, 0.8)
        colour = torch.tensor([_u(gen, 0.7, 1.0) for _ in range(3)]).view(3, 1, 1)
        glow = strength * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2)
        img = img * (1 - glow) + colour * glow
    if _bernoulli(gen, 0.5):
        img = img + _u(gen, 0.0, 0.06) * (_smooth_field(gen, h, w) - 0.5)
    if _bernoulli(gen, 0.5):
        img = img + _u(gen, 0.0, 1.0) / 255.0 * torch.randn(3, h, w, generator=gen)
    return quantize_8bit(img)


def sky_mask(gen: torch.Generator, h: int, w: int) -> torch.Tensor:
    """H×W bool, True above a wandering horizon (see the module docstring)."""
    horizon = _u(gen, 0.25, 1.0)
    wander = _u(gen, 0.0, 0.15)
    cells = torch.rand(1, 1, 1, 6, generator=gen) - 0.5
    curve = F.interpolate(cells, size=(1, w), mode="bicubic", align_corners=True).view(1, w)
    rows = torch.linspace(0.0, 1.0, h).view(h, 1)
    return rows < horizon + wander * 2 * curve


def paste_skies(clean: torch.Tensor, gen: torch.Generator, prob: float) -> torch.Tensor:
    """A copy of the N×3×H×W batch where each crop, with probability ``prob``, has a sky on top."""
    out = clean.clone()
    n, _, h, w = clean.shape
    for i in range(n):
        if _bernoulli(gen, prob):
            mask = sky_mask(gen, h, w)
            out[i] = torch.where(mask, sky(gen, h, w), out[i])
    return out
