"""Render the bundled sample pictures (examples/sample.png and examples/sample-noisy.png).

The scene is drawn from scratch with numpy and Pillow (no photo, no data set), so it can be shipped
under the project's MIT license. It has what a restoration demo needs: smooth gradients (where noise
shows), sharp edges and text (where blur shows), and fine texture.

    python examples/make_sample.py        # rewrites both files; deterministic
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 384, 256
NOISE_SIGMA = 25  # of 255: the usual "σ = 25" denoising benchmark level


def _value_noise(h: int, w: int, rng: np.random.Generator, octaves: int = 5) -> np.ndarray:
    """Smooth fractal noise in [0, 1] (bilinear value noise summed over octaves)."""
    total = np.zeros((h, w))
    amp_sum = 0.0
    for o in range(octaves):
        cells = 2 ** (o + 2)
        grid = rng.random((cells + 1, cells + 1))
        img = Image.fromarray((grid * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        amp = 0.5**o
        total += amp * np.asarray(img, dtype=np.float64) / 255
        amp_sum += amp
    return total / amp_sum


def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    return ImageFont.load_default(size=size)


def render() -> Image.Image:
    """The clean sample scene, 384×256 RGB."""
    rng = np.random.default_rng(2024)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    # Sky: vertical gradient from deep blue to warm orange near the horizon.
    t = (y / (HEIGHT * 0.62)).clip(0, 1)[..., None]
    sky = (1 - t) * np.array([40, 90, 190]) + t * np.array([250, 170, 110])
    img = sky.copy()
    # Sun with a soft glow.
    d = np.hypot(x - 290, y - 105)
    glow = np.exp(-((d / 60) ** 2))[..., None]
    img = img * (1 - 0.6 * glow) + 0.6 * glow * np.array([255, 230, 160])
    img[d < 22] = [255, 245, 200]
    # Two mountain ranges with textured slopes.
    tex = _value_noise(HEIGHT, WIDTH, rng)
    for base, amp, colour, freq in ((150, 55, (95, 110, 150), 0.021), (178, 38, (60, 95, 70), 0.034)):
        ridge = base - amp * (0.5 + 0.5 * np.sin(x[0] * freq + base)) * (0.6 + 0.4 * tex[0])
        mask = y > ridge[None, :]
        shade = (0.75 + 0.5 * tex)[..., None]
        img = np.where(mask[..., None], np.array(colour) * shade, img)
    # Lake: reflection of the sky, darker, with horizontal ripples.
    lake = y > 205
    ripple = 0.85 + 0.1 * np.sin(y * 1.7 + 3 * tex)
    mirrored = img[(2 * 205 - y).clip(0, HEIGHT - 1).astype(int), x.astype(int)]
    img = np.where(lake[..., None], mirrored * ripple[..., None] * np.array([0.7, 0.8, 0.95]), img)
    canvas = Image.fromarray(img.clip(0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(canvas)
    # A small house: walls, roof, windows and a door (straight edges at several angles).
    draw.rectangle((40, 150, 120, 205), fill=(225, 215, 190), outline=(60, 40, 30), width=2)
    draw.polygon([(32, 152), (80, 112), (128, 152)], fill=(170, 50, 40), outline=(70, 20, 15))
    for wx in (52, 92):
        draw.rectangle((wx, 162, wx + 16, 178), fill=(90, 150, 210), outline=(50, 40, 30), width=2)
        draw.line((wx + 8, 162, wx + 8, 178), fill=(50, 40, 30), width=1)
        draw.line((wx, 170, wx + 16, 170), fill=(50, 40, 30), width=1)
    draw.rectangle((72, 182, 88, 205), fill=(110, 70, 40))
    # Colour bars and a fine checkerboard: saturated colours and one-pixel detail.
    bars = [(230, 40, 40), (240, 160, 30), (240, 230, 40), (60, 180, 70), (40, 120, 220), (140, 60, 200)]
    for i, c in enumerate(bars):
        draw.rectangle((150 + i * 14, 220, 163 + i * 14, 248), fill=c)
    checker = ((np.indices((28, 60)).sum(axis=0) // 2) % 2 * 200 + 30).astype(np.uint8)
    canvas.paste(Image.fromarray(checker).convert("RGB"), (300, 220))
    # Text, large and small.
    draw.text((150, 18), "lir", font=_font(44), fill=(255, 255, 255), stroke_width=2, stroke_fill=(30, 40, 80))
    draw.text((150, 70), "image restoration sample", font=_font(13), fill=(20, 30, 60))
    return canvas


def add_noise(clean: Image.Image, sigma: float = NOISE_SIGMA, seed: int = 0) -> Image.Image:
    """Additive white Gaussian noise of ``sigma``/255, clipped to 8 bits."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(clean, dtype=np.float64) + rng.normal(0, sigma, (clean.height, clean.width, 3))
    return Image.fromarray(arr.round().clip(0, 255).astype(np.uint8))


def main() -> None:
    """Write examples/sample.png and examples/sample-noisy.png."""
    clean = render()
    clean.save(HERE / "sample.png", optimize=True)
    add_noise(clean).save(HERE / "sample-noisy.png", optimize=True)
    print(f"wrote {HERE / 'sample.png'} and {HERE / 'sample-noisy.png'}")


if __name__ == "__main__":
    main()
