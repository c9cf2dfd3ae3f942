"""Synthetic degradations for training and evaluating LIR, as pure functions.

Every public degradation has the same shape::

    degraded = fn(clean, generator, *, held_out=False)

``clean`` is a float batch ``N×3×H×W`` in [0, 1] (CPU); the result is a new float32 tensor of
the same shape (the input is never modified). All randomness comes from ``generator`` (a CPU
``torch.Generator``), so a batch is a deterministic function of (clean, generator state): the
training loop saves the generator state and resumes bit for bit, and evaluation reproduces the
same degraded images from a seed. Python's ``random`` and NumPy's global RNG are never used.

``held_out=True`` selects the *evaluation* setting of each task: parameters drawn from the edges
(the hard ends) of the training ranges, sampled from generators seeded by
:func:`held_out_generator` (seeds ``HELD_OUT_SEED_BASE + index``, far from any training seed).
``training/train.py`` refuses to train with it, so the evaluation images are never seen in
training, although their parameter values lie inside the training ranges.

The distributions are documented per task below and summarised in :data:`DISTRIBUTIONS` (which
``train.py`` writes into the checkpoint metadata).

To add a task: write ``fn(clean, generator, *, held_out=False) -> Tensor`` here and register it
in :data:`DEGRADATIONS`.
"""

from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DEGRADATIONS",
    "DISTRIBUTIONS",
    "HELD_OUT_SEED_BASE",
    "TASKS",
    "add_haze",
    "add_noise",
    "add_rain",
    "blur",
    "camera_shake_kernel",
    "defocus_kernel",
    "degrade",
    "depth_map",
    "gaussian_kernel",
    "held_out_generator",
    "jpeg",
    "linear_motion_kernel",
    "moderate_blur",
    "quantize_8bit",
]

#: Seeds of evaluation generators start here; training seeds are small integers (``--seed``).
HELD_OUT_SEED_BASE = 1_000_003_000

#: Side of every blur kernel (odd). Trajectories up to ~31 px long fit with room for the
#: optical smoothing applied after rasterisation.
KERNEL_SIZE = 37


# --------------------------------------------------------------------------------------------
# small helpers (all randomness through the generator)


def held_out_generator(index: int) -> torch.Generator:
    """Generator for the held-out (evaluation) degradation of image ``index`` of a set."""
    return torch.Generator().manual_seed(HELD_OUT_SEED_BASE + int(index))


def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    """One float uniform in [lo, hi)."""
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _logu(gen: torch.Generator, lo: float, hi: float) -> float:
    """One float log-uniform in [lo, hi) (scale parameters: densities, strengths)."""
    return math.exp(_u(gen, math.log(lo), math.log(hi)))


def _randint(gen: torch.Generator, lo: int, hi: int) -> int:
    """One integer in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


def _bernoulli(gen: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=gen)) < p


def _choice(gen: torch.Generator, probs: dict[str, float]) -> str:
    r = float(torch.rand((), generator=gen)) * sum(probs.values())
    acc = 0.0
    for name, p in probs.items():
        acc += p
        if r < acc:
            return name
    return name


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to the 8-bit grid: what saving a PNG would do."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip one batch through PIL's JPEG encoder (4:2:0, the common camera/web default)."""
    from PIL import Image

    out = []
    for img in x:
        arr = (img.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        back = np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)
        out.append(torch.from_numpy(back.copy()).permute(2, 0, 1))
    return torch.stack(out).to(torch.float32) / 255.0


def _fft_size(n: int) -> int:
    """Smallest integer >= ``n`` whose prime factors are 2, 3 and 5 (fast FFT lengths)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _fft_conv_same(x: torch.Tensor, kernels: torch.Tensor, pad_mode: str = "reflect") -> torch.Tensor:
    """Per-image 2-D convolution, ``x`` N×C×H×W with ``kernels`` N×k×k (same kernel on every channel).

    Done by FFT on the image padded by k//2 (``pad_mode``) so that the result equals a linear
    convolution with that padding: kernel sizes of 37 px or rain streaks of 80 px cost the
    same as 3 px. ``pad_mode="circular"`` skips the padding (for random fields that wrap).
    """
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    r = k // 2
    if pad_mode == "circular":
        xp = x
    else:
        # reflect padding needs r < size; fall back to replicate for tiny images
        mode = pad_mode if (r < h and r < w) else "replicate"
        xp = F.pad(x, (r, r, r, r), mode=mode)
    ph, pw = xp.shape[-2:]
    if pad_mode != "circular":
        # Zeros beyond the reflect padding change nothing in the cropped result (the padding already
        # covers the kernel's reach) and let the FFT run at a size with small prime factors: 2-3x
        # faster than e.g. 292 = 4 * 73 for a 256-pixel crop.
        ph, pw = _fft_size(ph), _fft_size(pw)
    # kernel embedded in a zero canvas with its centre at (0, 0) (circular convention);
    # flipped, because conv2d and the kernels here are cross-correlations
    # (offsets taken modulo the canvas, so a kernel larger than a small image wraps correctly)
    kk = torch.flip(kernels.to(torch.float32), dims=(-2, -1))
    off = torch.arange(-r, k - r)
    rows = off.remainder(ph).view(-1, 1).expand(k, k).reshape(-1)
    cols = off.remainder(pw).view(1, -1).expand(k, k).reshape(-1)
    canvas = torch.zeros(n, ph * pw, dtype=torch.float32)
    canvas.index_add_(1, rows * pw + cols, kk.reshape(n, -1))
    canvas = canvas.view(n, ph, pw)
    fx = torch.fft.rfft2(xp.to(torch.float32), s=(ph, pw))
    fk = torch.fft.rfft2(canvas)[:, None]
    y = torch.fft.irfft2(fx * fk, s=(ph, pw))
    if pad_mode != "circular":
        y = y[..., r : r + h, r : r + w]
    return y


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Isotropic Gaussian blur (reflect padding) of an N×C×H×W batch; sigma in pixels."""
    if sigma <= 0.05:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    mode = "reflect" if (r < x.shape[-1] and r < x.shape[-2]) else "replicate"
    y = F.pad(x, (r, r, 0, 0), mode=mode)
    y = F.conv2d(y, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode=mode)
    return F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# --------------------------------------------------------------------------------------------
# denoise


def add_noise(
    clean: torch.Tensor,
    generator: torch.Generator,
    *,
    held_out: bool = False,
    sigma: float | None = None,
    sigma_range: tuple[float, float] = (0.0, 50.0),
) -> torch.Tensor:
    """Additive white Gaussian noise, added in float and *not* clipped (the literature protocol).

    Training: one sigma per image, uniform in ``sigma_range`` (default [0, 50]) on the 8-bit
    scale, i.e. ``σ/255`` in [0, 1] units (blind denoising: the network is not told σ).
    Held out: σ uniform in [40, 50] (the hard end). ``sigma`` (8-bit scale) fixes it for every
    image, as the benchmark tables do (σ = 15, 25, 50).
    """
    n = clean.shape[0]
    if sigma is not None:
        sig = torch.full((n,), float(sigma))
    else:
        lo, hi = (40.0, 50.0) if held_out else sigma_range
        sig = lo + (hi - lo) * torch.rand(n, generator=generator)
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
    return clean.to(torch.float32) + noise * (sig / 255.0).view(n, 1, 1, 1)


# --------------------------------------------------------------------------------------------
# deblur: kernels


def _splat(points: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Rasterise sub-pixel points (x, y) relative to the kernel centre by bilinear splatting."""
    k = np.zeros((size, size), dtype=np.float64)
    c = size // 2
    xs = points[:, 0] + c
    ys = points[:, 1] + c
    x0 = np.floor(xs).astype(int)
    y0 = np.floor(ys).astype(int)
    fx = xs - x0
    fy = ys - y0
    for dx, dy, wgt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi = np.clip(x0 + dx, 0, size - 1)
        yi = np.clip(y0 + dy, 0, size - 1)
        np.add.at(k, (yi, xi), wgt * weights)
    return k


def _finish_kernel(k: np.ndarray, gen: torch.Generator, smooth: tuple[float, float]) -> torch.Tensor:
    """Centre a kernel on its centroid (no net image shift), smooth it a little, normalise."""
    size = k.shape[0]
    c = size // 2
    total = k.sum()
    yy, xx = np.mgrid[0:size, 0:size]
    cy = (k * yy).sum() / total
    cx = (k * xx).sum() / total
    # integer shift only: sub-pixel re-centring would blur the kernel itself
    k = np.roll(k, (int(round(c - cy)), int(round(c - cx))), axis=(0, 1))
    t = torch.from_numpy(k).float()[None, None]
    t = _gaussian_blur(t, _u(gen, *smooth))[0, 0]
    t = t.clamp_min(0)
    return t / t.sum()


def camera_shake_kernel(
    gen: torch.Generator, length: float, size: int = KERNEL_SIZE
) -> torch.Tensor:
    """Camera-shake kernel: a smooth random walk with momentum, scaled to ``length`` px.

    The velocity is an exponential moving average (momentum 0.7–0.95) of random 2-D steps with
    occasional jerks (larger steps, p = 0.05 per sample) — a hand's shake. The path is
    resampled to constant arc length, scaled so that its longest extent is ``length`` px, and
    the camera dwells unevenly along it (exposure weights from a smooth random speed profile,
    0.3–1.7 around 1). Rasterised by bilinear splatting, centred on its centroid, smoothed with
    a Gaussian of σ 0.3–0.6 px (optics), normalised to sum 1.
    """
    n = 64
    momentum = _u(gen, 0.7, 0.95)
    steps = torch.randn(n, 2, generator=gen).numpy().astype(np.float64)
    jerks = (torch.rand(n, generator=gen).numpy() < 0.05)[:, None]
    steps = steps * np.where(jerks, 3.0, 1.0)
    pts = [np.zeros(2)]
    # initial direction so that the path is not a point when momentum is high
    v = torch.randn(2, generator=gen).numpy().astype(np.float64)
    for s in steps:
        v = momentum * v + (1 - momentum) * s
        pts.append(pts[-1] + v)
    pts = np.stack(pts)
    # resample at constant arc length so dense sampling does not depend on speed
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] < 1e-9:
        pts = np.stack([np.linspace(-0.5, 0.5, n), np.zeros(n)], axis=1)
        arc = np.linspace(0, 1, n)
    m = 400
    a = np.linspace(0, arc[-1], m)
    pts = np.stack([np.interp(a, arc, pts[:, 0]), np.interp(a, arc, pts[:, 1])], axis=1)
    pts = pts - pts.mean(axis=0)
    extent = max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1e-6)
    pts = pts * (length / extent)
    # uneven dwell time along the path (slow where the hand reverses)
    prof = torch.randn(8, generator=gen).numpy()
    dwell = 1.0 + 0.7 * np.tanh(np.interp(np.linspace(0, 7, m), np.arange(8), prof))
    k = _splat(pts, dwell, size)
    return _finish_kernel(k, gen, (0.3, 0.6))


def linear_motion_kernel(
    gen: torch.Generator, length: float, angle: float, size: int = KERNEL_SIZE
) -> torch.Tensor:
    """Straight uniform motion of ``length`` px at ``angle`` radians (smoothed σ 0.2–0.5 px)."""
    m = max(2, int(length * 8))
    t = np.linspace(-length / 2, length / 2, m)
    pts = np.stack([t * math.cos(angle), t * math.sin(angle)], axis=1)
    k = _splat(pts, np.ones(m), size)
    return _finish_kernel(k, gen, (0.2, 0.5))


def defocus_kernel(radius: float, size: int = KERNEL_SIZE) -> torch.Tensor:
    """Out-of-focus disk of ``radius`` px, anti-aliased by 8× supersampling."""
    ss = 8
    c = size // 2
    g = (np.arange(size * ss) + 0.5) / ss - c - 0.5
    yy, xx = np.meshgrid(g, g, indexing="ij")
    inside = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    k = inside.reshape(size, ss, size, ss).mean(axis=(1, 3))
    if k.sum() == 0:
        k[c, c] = 1
    return torch.from_numpy(k / k.sum()).float()


def gaussian_kernel(
    sigma_x: float, sigma_y: float, theta: float, size: int = KERNEL_SIZE
) -> torch.Tensor:
    """Anisotropic Gaussian kernel rotated by ``theta`` radians."""
    c = size // 2
    yy, xx = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64)
    ct, st = math.cos(theta), math.sin(theta)
    u = ct * xx + st * yy
    v = -st * xx + ct * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return torch.from_numpy(k / k.sum()).float()


#: Training mix of blur kernel families (probabilities).
BLUR_FAMILIES = {"camera_shake": 0.6, "linear": 0.2, "defocus": 0.1, "gaussian": 0.1}


def _motion_length(gen: torch.Generator) -> float:
    # 3 + 28 sqrt(u): half of the motion kernels are longer than 17 px; long shake is where a
    # uniform length left the model weakest (+0.55 dB on the held-out U[23, 31] px)
    return 3.0 + 28.0 * math.sqrt(_u(gen, 0.0, 1.0))


def _sample_kernel(gen: torch.Generator, held_out: bool) -> torch.Tensor:
    if held_out:
        # the hard end of the camera-shake family: long trajectories
        return camera_shake_kernel(gen, _u(gen, 23.0, 31.0))
    fam = _choice(gen, BLUR_FAMILIES)
    if fam == "camera_shake":
        return camera_shake_kernel(gen, _motion_length(gen))
    if fam == "linear":
        return linear_motion_kernel(gen, _motion_length(gen), _u(gen, 0.0, math.pi))
    if fam == "defocus":
        return defocus_kernel(_u(gen, 1.0, 8.0))
    sx, sy = _u(gen, 0.5, 3.5), _u(gen, 0.5, 3.5)
    return gaussian_kernel(sx, sy, _u(gen, 0.0, math.pi))


def _blur_noise_quantize(
    clean: torch.Tensor, kernels: torch.Tensor, sigma_255: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    n = clean.shape[0]
    y = _fft_conv_same(clean.to(torch.float32), kernels)
    y = y + torch.randn(y.shape, generator=gen) * (sigma_255 / 255.0).view(n, 1, 1, 1)
    return quantize_8bit(y)


def blur(
    clean: torch.Tensor,
    generator: torch.Generator,
    *,
    held_out: bool = False,
    jpeg_prob: float = 0.2,
) -> torch.Tensor:
    """Blur each image with its own random kernel, add sensor noise, quantise (deblur task).

    Training distribution, per image:

    - kernel family: camera shake 60% (random-walk trajectories, see
      :func:`camera_shake_kernel`), linear motion 20% (angle U[0, π)), both of length
      3 + 28·√u px, u ~ U[0, 1] (3–31 px, half of them over 17 px); defocus disk 10% (radius
      U[1, 8] px), Gaussian 10% (σx, σy U[0.5, 3.5] px, rotated U[0, π)); kernels are 37×37,
      applied with reflect padding;
    - sensor noise: Gaussian, σ U[0, 2]/255, added after blurring;
    - clip and 8-bit quantisation;
    - JPEG with probability ``jpeg_prob`` (default 0.2), quality U{75..95}.

    Held out: camera-shake kernels of length U[23, 31] px, noise σ = 2/255, 8-bit, no JPEG.
    """
    n = clean.shape[0]
    kernels = torch.stack([_sample_kernel(generator, held_out) for _ in range(n)])
    sig = torch.full((n,), 2.0) if held_out else 2.0 * torch.rand(n, generator=generator)
    y = _blur_noise_quantize(clean, kernels, sig, generator)
    if not held_out:
        out = []
        for i in range(n):
            if _bernoulli(generator, jpeg_prob):
                out.append(jpeg(y[i : i + 1], _randint(generator, 75, 95)))
            else:
                out.append(y[i : i + 1])
        y = torch.cat(out)
    return y


#: Kernel families of :func:`moderate_blur`; fixed, so the setting stays put when training's mix moves.
MODERATE_BLUR_FAMILIES = {"camera_shake": 0.5, "linear": 0.2, "defocus": 0.15, "gaussian": 0.15}


def moderate_blur(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Second evaluation setting of the deblur task: the moderate blur most photos have.

    Not a training distribution and not the target's setting (that is ``blur(held_out=True)``);
    it measures what the heavy-shake figure cannot: whether the model helps, or harms, photos
    with slight shake or slight defocus. Per image: camera shake 50% (extent U[5, 15] px),
    linear motion 20% (U[5, 15] px), defocus disk 15% (radius U[1.5, 4] px), Gaussian 15%
    (σx, σy U[0.8, 2] px); noise σ = 1/255; 8-bit; no JPEG. Use held-out generators.
    """
    n = clean.shape[0]
    kernels = []
    for _ in range(n):
        fam = _choice(generator, MODERATE_BLUR_FAMILIES)
        if fam == "camera_shake":
            k = camera_shake_kernel(generator, _u(generator, 5.0, 15.0))
        elif fam == "linear":
            k = linear_motion_kernel(generator, _u(generator, 5.0, 15.0), _u(generator, 0.0, math.pi))
        elif fam == "defocus":
            k = defocus_kernel(_u(generator, 1.5, 4.0))
        else:
            sx, sy = _u(generator, 0.8, 2.0), _u(generator, 0.8, 2.0)
            k = gaussian_kernel(sx, sy, _u(generator, 0.0, math.pi))
        kernels.append(k)
    return _blur_noise_quantize(clean, torch.stack(kernels), torch.full((n,), 1.0), generator)


# --------------------------------------------------------------------------------------------
# derain


def _streak_layer(
    gen: torch.Generator,
    h: int,
    w: int,
    *,
    density: float,
    angle_deg: float,
    length: float,
    width: float,
    streak_blur: float,
) -> torch.Tensor:
    """One rain layer (1×1×H×W, values in [0, 1]).

    Seeds: Bernoulli(density) pixels with brightness U[0.4, 1]; each seed is smeared along a
    line of ``length`` px at ``angle_deg`` from vertical (positive = leaning right at the
    bottom), widened by a Gaussian of σ = ``width``/2 across, then blurred by ``streak_blur``
    (out-of-focus drops), normalised so a streak's core is about its seed brightness and
    clipped at 1 where streaks overlap. Circular convolution: the field wraps, harmlessly.
    """
    seeds = (torch.rand(1, 1, h, w, generator=gen) < density).float()
    seeds = seeds * (0.4 + 0.6 * torch.rand(1, 1, h, w, generator=gen))
    size = int(2 * math.ceil(length / 2 + 3 * max(width, streak_blur)) + 3)
    c = size // 2
    yy, xx = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64)
    a = math.radians(angle_deg)
    # along = coordinate along the streak direction (down, tilted), across = perpendicular
    along = xx * math.sin(a) + yy * math.cos(a)
    across = xx * math.cos(a) - yy * math.sin(a)
    sig_across = max(width / 2.0, 0.35)
    profile_across = np.exp(-0.5 * (across / sig_across) ** 2)
    # soft ends and brighter middle, like a falling drop's trace
    half = length / 2.0
    profile_along = np.clip(1.0 - (along / max(half, 1e-6)) ** 2, 0.0, 1.0) ** 0.5
    k = profile_across * profile_along
    k = torch.from_numpy(k).float()[None]
    layer = _fft_conv_same(seeds, k, pad_mode="circular")
    # the kernel's peak is 1: a lone streak's core has its seed's brightness
    if streak_blur > 0.05:
        layer = _gaussian_blur(layer, streak_blur)
    return layer.clamp(0.0, 1.0)


def _add_streaks(
    img: torch.Tensor, generator: torch.Generator, *, theta0: float, coverage: float, length: float,
    width: float, opacity: float, additive: bool,
) -> torch.Tensor:
    """``img`` (1×3×H×W) under one streak layer: direction θ0 + U[−15°, 15°], streak blur σ
    U[0, 1.5], near-white colour, screen or additive blend, clipped."""
    h, w = img.shape[-2:]
    sblur = _u(generator, 0.0, 1.5)
    angle = theta0 + _u(generator, -15.0, 15.0)
    r = _streak_layer(
        generator, h, w, density=coverage / (length * width), angle_deg=angle,
        length=length, width=width, streak_blur=sblur,
    )
    grey = _u(generator, 0.8, 1.0)
    tint = torch.tensor([_u(generator, -0.03, 0.03) for _ in range(3)])
    colour = (grey + tint).clamp(0, 1).view(1, 3, 1, 1)
    layer = opacity * r * colour
    img = (img + layer) if additive else 1.0 - (1.0 - img) * (1.0 - layer)
    return img.clamp(0.0, 1.0)


def _add_veil(img: torch.Tensor, generator: torch.Generator, lo: float, hi: float) -> torch.Tensor:
    """Rain mist: ``I(1 − v) + v·A``, v U[lo, hi], grey airlight A U[0.7, 1]."""
    v = _u(generator, lo, hi)
    a = _u(generator, 0.7, 1.0)
    return img * (1 - v) + v * a


#: Share of training images drawn as heavy rain (``add_rain``).
STORM_PROB = 0.8


def add_rain(
    clean: torch.Tensor,
    generator: torch.Generator,
    *,
    held_out: bool = False,
) -> torch.Tensor:
    """Synthetic rain streaks (derain task).

    Training distribution, per image (sizes in pixels of a ~480×320 image, as Rain100H):

    - 1–3 streak layers (uniform); a common direction θ0 U[−35°, 35°] from vertical, each
      layer at θ0 + U[−15°, 15°] (crossing layers, as in Rain100H);
    - per layer: coverage c log-U[0.01, 0.3] (seed density = c / (length·width), so long
      streaks do not saturate the image), length U[8, 120], width U[0.6, 3], streak blur σ
      U[0, 1.5], opacity U[0.25, 0.9];
    - colour: near white, grey level U[0.8, 1] with a per-channel tint of ±0.03;
    - blend: screen ``1 − (1 − I)(1 − αR)`` (50%) or additive ``I + αR`` (50%), clipped;
    - veil (rain mist / accumulation) with probability 0.3: ``I(1 − v) + v·A``,
      v U[0.05, 0.25], A grey U[0.7, 1];
    - 8-bit quantisation.

    A share ``STORM_PROB`` of the images is heavy rain instead: 3 layers, additive, each with
    coverage log-U[0.04, 0.3], length U[50, 120], width U[1.2, 3], opacity U[0.5, 0.9] (the
    upper part of each range, where the model left ghosts); direction, blur, colour and veil
    as above.

    Held out: 3 layers, |θ0| U[20°, 35°] (random side), coverage U[0.06, 0.15], length
    U[70, 120], width U[1.5, 3], opacity U[0.55, 0.8], additive blend, veil v U[0.1, 0.25]:
    heavy rain at the hard end of every range (input PSNR near Rain100H's ~13 dB).
    """
    n = clean.shape[0]
    out = []
    for i in range(n):
        img = clean[i : i + 1].to(torch.float32)
        storm = not held_out and _bernoulli(generator, STORM_PROB)
        if held_out:
            layers = 3
            side = -1.0 if _bernoulli(generator, 0.5) else 1.0
            theta0 = side * _u(generator, 20.0, 35.0)
        else:
            layers = 3 if storm else _randint(generator, 1, 3)
            theta0 = _u(generator, -35.0, 35.0)
        additive = True if held_out or storm else _bernoulli(generator, 0.5)
        for _ in range(layers):
            if held_out:
                coverage = _u(generator, 0.06, 0.15)
                length = _u(generator, 70.0, 120.0)
                width = _u(generator, 1.5, 3.0)
                opacity = _u(generator, 0.55, 0.8)
            elif storm:
                coverage = _logu(generator, 0.04, 0.3)
                length = _u(generator, 50.0, 120.0)
                width = _u(generator, 1.2, 3.0)
                opacity = _u(generator, 0.5, 0.9)
            else:
                coverage = _logu(generator, 0.01, 0.3)
                length = _u(generator, 8.0, 120.0)
                width = _u(generator, 0.6, 3.0)
                opacity = _u(generator, 0.25, 0.9)
            img = _add_streaks(
                img, generator, theta0=theta0, coverage=coverage, length=length, width=width,
                opacity=opacity, additive=additive,
            )
        if held_out or _bernoulli(generator, 0.3):
            img = _add_veil(img, generator, 0.1 if held_out else 0.05, 0.25)
        out.append(quantize_8bit(img))
    return torch.cat(out)


def light_rain(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Second evaluation setting of the derain task: the light rain most rainy photos have.

    Not a training distribution and not the target's setting (that is ``add_rain(held_out=True)``);
    it measures what the heavy-rain figure cannot: whether training on heavy rain harms photos
    with light rain. Per image: 1–2 layers, θ0 U[−35°, 35°]; per layer coverage log-U[0.01, 0.08],
    length U[10, 60], width U[0.6, 1.5], opacity U[0.25, 0.6]; screen or additive blend (50%);
    a veil v U[0.03, 0.1] with probability 0.3; 8-bit. Use held-out generators.
    """
    out = []
    for i in range(clean.shape[0]):
        img = clean[i : i + 1].to(torch.float32)
        layers = _randint(generator, 1, 2)
        theta0 = _u(generator, -35.0, 35.0)
        additive = _bernoulli(generator, 0.5)
        for _ in range(layers):
            img = _add_streaks(
                img, generator, theta0=theta0, coverage=_logu(generator, 0.01, 0.08),
                length=_u(generator, 10.0, 60.0), width=_u(generator, 0.6, 1.5),
                opacity=_u(generator, 0.25, 0.6), additive=additive,
            )
        if _bernoulli(generator, 0.3):
            img = _add_veil(img, generator, 0.03, 0.1)
        out.append(quantize_8bit(img))
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# dehaze


def _smooth_field(gen: torch.Generator, h: int, w: int) -> torch.Tensor:
    """Smooth random field in [0, 1]: a 3–8-cell grid of uniforms, bicubic-upsampled."""
    gh = _randint(gen, 3, 8)
    gw = max(2, round(gh * w / h))
    f = torch.rand(1, 1, gh, gw, generator=gen)
    f = F.interpolate(f, size=(h, w), mode="bicubic", align_corners=True)[0, 0]
    f = f - f.min()
    return f / f.max().clamp_min(1e-6)


def depth_map(gen: torch.Generator, h: int, w: int, *, held_out: bool = False) -> torch.Tensor:
    """Synthetic relative depth (H×W in [0, 1], 1 = farthest) for haze synthesis.

    A base layout, chosen uniformly:

    - ``ground``: a ground plane seen from eye height — below a horizon at U[0.15, 0.6]·H the
      distance grows as 1/(row − horizon) towards it (with a slight roll, ±5° tilt), sky
      (distance 1) above;
    - ``field``: a smooth random field (large-scale scene structure);
    - ``top``: distance growing to the top, ``(1 − row/H)^p`` with p U[0.5, 2].

    Mixed with a smooth random field (weight U[0, 0.35]) so layouts are never perfectly
    regular, then 0–4 sharp-edged near objects (rectangles or ellipses, each 10–45% of the
    image side, standing on the lower part of the image) pasted at depth U[0.05, 0.45] —
    occluders give the depth discontinuities real scenes have. Held out: always ``ground``
    plus 2–4 objects.
    """
    yy = torch.linspace(0.0, 1.0, h).view(h, 1).expand(h, w)
    xx = torch.linspace(0.0, 1.0, w).view(1, w).expand(h, w)
    kind = "ground" if held_out else _choice(gen, {"ground": 1.0, "field": 1.0, "top": 1.0})
    if kind == "ground":
        horizon = _u(gen, 0.15, 0.6)
        tilt = math.tan(math.radians(_u(gen, -5.0, 5.0))) * (w / h)
        rows = yy - (horizon + tilt * (xx - 0.5))
        scale = _u(gen, 0.02, 0.15)
        d = torch.where(rows > 0, scale / (rows + scale), torch.ones_like(rows))
    elif kind == "field":
        d = _smooth_field(gen, h, w)
    else:
        d = (1.0 - yy) ** _u(gen, 0.5, 2.0)
    mix = _u(gen, 0.0, 0.35)
    d = (1 - mix) * d + mix * _smooth_field(gen, h, w)
    n_obj = _randint(gen, 2, 4) if held_out else _randint(gen, 0, 4)
    for _ in range(n_obj):
        oh, ow = _u(gen, 0.1, 0.45), _u(gen, 0.1, 0.45)
        cy, cx = _u(gen, 0.45, 1.0), _u(gen, 0.0, 1.0)
        depth = _u(gen, 0.05, 0.45)
        if _bernoulli(gen, 0.5):
            mask = ((yy - cy).abs() <= oh / 2) & ((xx - cx).abs() <= ow / 2)
        else:
            mask = ((yy - cy) / (oh / 2)) ** 2 + ((xx - cx) / (ow / 2)) ** 2 <= 1
        d = torch.where(mask, torch.minimum(d, torch.full_like(d, depth)), d)
    return d.clamp(0.0, 1.0)


def add_haze(
    clean: torch.Tensor,
    generator: torch.Generator,
    *,
    held_out: bool = False,
) -> torch.Tensor:
    """Atmospheric scattering model ``I = J·t + A(1 − t)``, ``t = exp(−β·d)`` (dehaze task).

    Training distribution, per image:

    - depth d in [0, 1] from :func:`depth_map`;
    - β U[0.3, 3.0]: at the farthest point t from 0.74 (light mist) to 0.05 (dense). Uniform
      rather than log-uniform (the first models' choice, which gave dense haze, β ≥ 2, only 18%
      of the crops): dense haze is what a user asks a dehazer to remove, and it is the part
      these small models handled worst (colour casts where t is smallest);
    - airlight A: grey level U[0.75, 1.0] plus a per-channel tint U[−0.1, 0.1], clipped to
      [0, 1]. Twice the held-out tint: the models trained with ±0.05 kept the airlight's
      tint as a cast; with ±0.1 estimating the airlight pays more, and the first run with it
      gained on every photo set (model card);
    - clip and 8-bit quantisation.

    Held out: β U[2.0, 3.0] (dense haze) with ``ground`` depth and near objects,
    A grey U[0.75, 0.85] and tint ±U[0.03, 0.05] per channel.
    """
    n, _, h, w = clean.shape
    out = []
    for i in range(n):
        t, a = draw_haze(generator, h, w, held_out=held_out)
        out.append(quantize_8bit(clean[i : i + 1].to(torch.float32) * t + a * (1.0 - t)))
    return torch.cat(out)


def draw_haze(
    generator: torch.Generator, h: int, w: int, *, held_out: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's haze, as :func:`add_haze` draws it: transmission ``(1, 1, h, w)`` and
    airlight ``(1, 3, 1, 1)``."""
    d = depth_map(generator, h, w, held_out=held_out)
    beta = _u(generator, 2.0, 3.0) if held_out else _u(generator, 0.3, 3.0)
    if held_out:
        grey = _u(generator, 0.75, 0.85)
        tint = [
            (1.0 if _bernoulli(generator, 0.5) else -1.0) * _u(generator, 0.03, 0.05)
            for _ in range(3)
        ]
    else:
        grey = _u(generator, 0.75, 1.0)
        tint = [_u(generator, -0.1, 0.1) for _ in range(3)]
    a = (grey + torch.tensor(tint)).clamp(0.0, 1.0).view(1, 3, 1, 1)
    return torch.exp(-beta * d)[None, None], a


# --------------------------------------------------------------------------------------------
# registry

Degradation = Callable[..., torch.Tensor]

#: task name -> degradation function ``fn(clean, generator, *, held_out=False)``.
DEGRADATIONS: dict[str, Degradation] = {
    "denoise": add_noise,
    "deblur": blur,
    "derain": add_rain,
    "dehaze": add_haze,
}
TASKS = tuple(DEGRADATIONS)

#: One-line summaries of the training distributions (written into checkpoint metadata).
DISTRIBUTIONS: dict[str, str] = {
    "denoise": "AWGN sigma ~ U[0,50]/255 per image, added in float, not clipped (blind)",
    "deblur": (
        "per-image kernel: camera shake 60% (momentum random walk) and linear motion 20%, "
        "extent 3+28 sqrt(U[0,1]) px; defocus disk 10% (r U[1,8]), Gaussian 10% (sigma "
        "U[0.5,3.5], anisotropic); + Gaussian noise sigma U[0,2]/255; clip; 8-bit; JPEG q "
        "U{75..95} p=0.2"
    ),
    "derain": (
        "1-3 streak layers, direction U[-35,35] deg (+-15 per layer), coverage logU[0.01,0.3], "
        "length U[8,120], width U[0.6,3], blur U[0,1.5], opacity U[0.25,0.9], near-white; "
        "screen or additive blend, clipped; veil p=0.3 v U[0.05,0.25]; 8-bit"
    ),
    "dehaze": (
        "I=J t+A(1-t), t=exp(-beta d); depth: ground plane / smooth field / distance-to-top "
        "+ smooth field + 0-4 sharp near objects; beta U[0.3,3]; A grey U[0.75,1] tint "
        "+-0.1; 8-bit"
    ),
}


def degrade(
    task: str, clean: torch.Tensor, generator: torch.Generator, *, held_out: bool = False
) -> torch.Tensor:
    """Degrade ``clean`` (N×3×H×W in [0, 1]) for ``task`` (one of :data:`TASKS`)."""
    try:
        fn = DEGRADATIONS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}") from None
    return fn(clean, generator, held_out=held_out)
