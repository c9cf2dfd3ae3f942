"""Padding to the network's valid sizes and tiled inference with seamless blending.

The LIR network only takes ``H`` and ``W`` that are multiples of
:data:`SIZE_MULTIPLE` (32) and at least :data:`MIN_SIZE` (128). The restorer:

1. pads the batch with :func:`pad_to_valid` (reflection, centred),
2. runs the network with :func:`run_tiled` (whole image, or overlapping equal
   tiles blended with raised-cosine weights),
3. cuts the result back with :func:`crop`.

Everything here is pure torch; no model is involved.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from lir.network.lir import MIN_SIZE, SIZE_MULTIPLE  # the network's size contract

__all__ = [
    "SIZE_MULTIPLE",
    "MIN_SIZE",
    "Tile",
    "valid_size",
    "pad_to_valid",
    "crop",
    "check_tiling",
    "plan_tiles",
    "blend_window",
    "run_tiled",
]


# Tile starts are put on this grid when the geometry allows, so every tile sees
# the network's down-sampling grid in the same phase as the whole image does;
# tiled output then differs from whole-image output only through the tile borders.
_ALIGN = SIZE_MULTIPLE

#: ``fn`` given to :func:`run_tiled`: an N×C×h×w batch in, the same shape out.
TileFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- padding


def valid_size(n: int, multiple: int = SIZE_MULTIPLE, min_size: int = MIN_SIZE) -> int:
    """Smallest size >= ``max(n, min_size)`` that is a multiple of ``multiple``."""
    if multiple < 1 or min_size < 1:
        raise ValueError(f"multiple and min_size must be positive; got {multiple}, {min_size}")
    return -(-max(n, min_size) // multiple) * multiple


def _reflect_index(size: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a reflect-padded axis (edge not repeated, like ``F.pad(mode="reflect")``).

    Reflection is repeated (period ``2·(size-1)``) so any amount of padding works,
    also when the pad is larger than the image; a 1-pixel axis is replicated.
    """
    idx = torch.arange(-before, size + after, device=device)
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = idx.remainder(period)  # non-negative for a positive divisor
    return torch.where(idx >= size, period - idx, idx)


def pad_to_valid(
    x: torch.Tensor, multiple: int = SIZE_MULTIPLE, min_size: int = MIN_SIZE
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the last two axes of ``x`` to a size the network accepts.

    Padding is centred (split between top/bottom and left/right, the odd pixel
    going to the bottom/right): each border gets half the padding, so reflection
    reaches less far and the image's own borders sit further from the padded
    edge the network sees. Where the pad is at least the image size, reflection
    is repeated (a 1-pixel axis is replicated), so any size from 1×1 works.

    Args:
        x: tensor ``...×H×W`` (normally ``N×3×H×W``), any dtype and device.
        multiple: padded sizes are multiples of this.
        min_size: padded sizes are at least this.

    Returns:
        ``(padded, (H, W))``: the padded tensor (``x`` itself when no padding is
        needed) and the original size, for :func:`crop`.
    """
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (…×H×W); got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)})")
    ph, pw = valid_size(h, multiple, min_size), valid_size(w, multiple, min_size)
    out = x
    if ph != h:
        top = (ph - h) // 2
        out = out.index_select(-2, _reflect_index(h, top, ph - h - top, x.device))
    if pw != w:
        left = (pw - w) // 2
        out = out.index_select(-1, _reflect_index(w, left, pw - w - left, x.device))
    return out, (h, w)


def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_valid`: cut the original ``(H, W)`` out of the padded ``x``.

    Uses the same centring as :func:`pad_to_valid`, so only the padded tensor
    (or anything of its size, like the restored output) and the original size
    are needed. Returns a view.
    """
    h, w = size
    ph, pw = x.shape[-2:]
    if not (0 < h <= ph and 0 < w <= pw):
        raise ValueError(f"cannot crop {h}×{w} out of {ph}×{pw}")
    top, left = (ph - h) // 2, (pw - w) // 2
    return x[..., top : top + h, left : left + w]


# --------------------------------------------------------------------------- tile plan


@dataclass(frozen=True)
class Tile:
    """One tile: rows ``y:y+h``, columns ``x:x+w`` of the (padded) image."""

    y: int
    x: int
    h: int
    w: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices for indexing the last two axes."""
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)


def check_tiling(tile: int | None, overlap: int, *, names: tuple[str, str] = ("tile", "overlap")) -> None:
    """Validate tiling options early (e.g. before loading a model).

    ``tile`` is None (no tiling) or a multiple of 32 that is at least 128;
    ``overlap`` is an int with ``0 <= overlap < tile / 2``. ``names`` are how the caller spelled
    the two options (``tile_overlap=``, ``--overlap``), so the message names what the user typed.

    Raises:
        TypeError: not integers.
        ValueError: out of range, with the nearest valid tile size suggested.
    """
    tile_name, overlap_name = names
    if tile is not None:
        if not isinstance(tile, int) or isinstance(tile, bool):
            raise TypeError(f"{tile_name} must be an int or None; got {type(tile).__qualname__}")
        if tile < MIN_SIZE or tile % SIZE_MULTIPLE:
            nearest = max(MIN_SIZE, SIZE_MULTIPLE * round(tile / SIZE_MULTIPLE))
            raise ValueError(
                f"{tile_name} must be a multiple of {SIZE_MULTIPLE} and at least {MIN_SIZE}; got {tile} — try {nearest}"
            )
    if not isinstance(overlap, int) or isinstance(overlap, bool):
        raise TypeError(f"{overlap_name} must be an int; got {type(overlap).__qualname__}")
    if overlap < 0 or (tile is not None and 2 * overlap >= tile):
        limit = f"{(tile - 1) // 2}" if tile is not None else f"{tile_name} / 2"
        raise ValueError(
            f"{overlap_name} must be in 0..{limit} (0 <= {overlap_name} < {tile_name} / 2); got {overlap}"
        )


def _starts(length: int, size: int, overlap: int) -> list[int]:
    """Evenly spread starts of ``size``-long tiles covering ``length``, overlapping >= ``overlap``."""
    span = length - size
    if span <= 0:
        return [0]
    # Work on the alignment grid when the geometry allows (always, for padded images).
    unit = _ALIGN if span % _ALIGN == 0 and size - overlap >= _ALIGN else 1
    units, max_step = span // unit, (size - overlap) // unit
    steps = -(-units // max_step)  # fewest steps whose rounded lengths all stay <= max_step
    # round(i·units/steps) in integers: consecutive starts differ by floor or ceil of units/steps.
    return [(2 * i * units + steps) // (2 * steps) * unit for i in range(steps + 1)]


def plan_tiles(height: int, width: int, tile: int | None, overlap: int) -> list[Tile]:
    """Plan equal-sized tiles covering a ``height``×``width`` image.

    The tile is ``tile``×``tile`` clipped to the image (so a small image is one
    tile); ``tile=None`` means the whole image. Along each axis the fewest tiles
    are used that overlap by at least ``overlap``, spread evenly (starts rounded,
    on the 32-pixel grid when possible, so no slivers), first tile at 0, last
    tile flush with the far edge. Row-major order.
    """
    check_tiling(tile, overlap)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive; got {height}×{width}")
    th = height if tile is None else min(tile, height)
    tw = width if tile is None else min(tile, width)
    return [
        Tile(y, x, th, tw) for y in _starts(height, th, overlap) for x in _starts(width, tw, overlap)
    ]


def _ramp(n: int, overlap: int, start: bool, end: bool) -> torch.Tensor:
    """1-D weights: raised cosine over ``overlap`` pixels at the chosen ends, 1 elsewhere."""
    r = torch.ones(n, dtype=torch.float64)
    k = min(overlap, n)
    if k > 0:
        # Sampled at pixel centres: never exactly 0 and rise(i) + rise(overlap-1-i) == 1,
        # so two ramps crossing over exactly `overlap` pixels already sum to one.
        rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(k, dtype=torch.float64) + 0.5) / overlap)
        if start:
            r[:k] *= rise
        if end:
            r[n - k :] *= rise.flip(0)
    return r


def blend_window(h: int, w: int, overlap: int, *, top: bool, bottom: bool, left: bool, right: bool) -> torch.Tensor:
    """Blending weights (float32 ``h×w``) for one tile.

    A side flagged True borders another tile and ramps up from near 0 to 1 over
    ``overlap`` pixels (raised cosine); sides on the image border stay flat at 1,
    since nothing else covers them. :func:`run_tiled` divides by the accumulated
    weights, so the blend sums to exactly one at every pixel whatever the overlap.
    """
    wy = _ramp(h, overlap, top, bottom)
    wx = _ramp(w, overlap, left, right)
    return (wy[:, None] * wx[None, :]).to(torch.float32)


# --------------------------------------------------------------------------- running


def _reporter(progress: Any, total: int) -> Callable[[int], None]:
    """Normalise the progress hook to ``report(n_done_now)``."""
    if progress is None or progress is False:
        return lambda n: None
    if hasattr(progress, "update"):  # tqdm-like: advanced per batch
        # Only fill in a missing total: a caller's bar may span several images and know better.
        if getattr(progress, "total", None) is None:
            try:
                progress.total = total
                if hasattr(progress, "refresh"):
                    progress.refresh()
            except AttributeError:  # read-only total: the bar just counts
                pass
        return lambda n: progress.update(n) if n else None
    if callable(progress) and progress is not True:
        done = 0

        def report(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

        return report
    raise TypeError(
        "progress must be None, a callable progress(done, total) or a tqdm-like object with .update(n); "
        f"got {progress!r}"
    )


def run_tiled(
    fn: TileFn,
    x: torch.Tensor,
    *,
    tile: int | None,
    overlap: int = 0,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | Any | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to ``x`` tile by tile and blend the results seamlessly.

    Args:
        fn: takes an ``B×C×h×w`` tensor (a fresh copy, same dtype and device as
            ``x``; ``B <= batch_size``) and returns the same shape (moving it
            to its device and back is up to ``fn``; any device is accepted back).
        x: ``N×C×H×W`` float tensor, already padded to a size ``fn`` accepts
            (see :func:`pad_to_valid`), normally on the CPU.
        tile: tile size (multiple of 32, >= 128; clipped to the image), or None
            for whole images.
        overlap: minimum overlap between neighbouring tiles, ``0 <= overlap < tile/2``;
            also the width of the blending ramps.
        batch_size: crops (tiles of any of the ``N`` images) per ``fn`` call.
        progress: None, a callable ``progress(done, total)`` called with (0, total)
            first and after every ``fn`` call, or a tqdm-like object (``update(n)``
            called per batch; its ``total`` is filled in when it is None). Counts
            crops: ``N × tiles``.

    Returns:
        float32 CPU tensor ``N×C×H×W``. Only ``batch_size`` crops exist at a time
        besides the output canvas and one weight plane.

    Raises:
        TypeError / ValueError: bad arguments, or ``fn`` returning another shape.
    """
    check_tiling(tile, overlap)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a float N×C×H×W tensor; got {getattr(x, 'dtype', type(x).__qualname__)} "
                         f"of shape {tuple(getattr(x, 'shape', ()))}")
    n_img, channels, height, width = x.shape
    tiles = plan_tiles(height, width, tile, overlap)

    windows: dict[tuple[bool, bool, bool, bool], torch.Tensor] = {}

    def window(t: Tile) -> torch.Tensor:
        # At most 9 distinct windows (corner/edge/inner), all tiles having one size.
        key = (t.y > 0, t.y + t.h < height, t.x > 0, t.x + t.w < width)
        if key not in windows:
            windows[key] = blend_window(t.h, t.w, overlap, top=key[0], bottom=key[1], left=key[2], right=key[3])
        return windows[key]

    weight = torch.zeros(height, width, dtype=torch.float32)
    for t in tiles:
        weight[t.slices] += window(t)
    out = torch.zeros(n_img, channels, height, width, dtype=torch.float32)

    report = _reporter(progress, n_img * len(tiles))
    report(0)
    # A generator, so crops are cut only when their batch is due: memory stays bounded.
    jobs: Iterator[tuple[int, Tile]] = ((i, t) for i in range(n_img) for t in tiles)
    while chunk := list(itertools.islice(jobs, batch_size)):
        batch = torch.cat([x[i : i + 1, :, t.y : t.y + t.h, t.x : t.x + t.w] for i, t in chunk])
        result = fn(batch)
        if not isinstance(result, torch.Tensor) or result.shape != batch.shape:
            raise ValueError(
                f"fn must return a tensor of its input's shape {tuple(batch.shape)}; "
                f"got {tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__qualname__}"
            )
        result = result.detach().to("cpu", torch.float32)
        for k, (i, t) in enumerate(chunk):
            rows, cols = t.slices
            out[i, :, rows, cols].addcmul_(result[k], window(t))
        del batch, result
        report(len(chunk))
    return out.div_(weight)
