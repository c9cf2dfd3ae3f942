"""lir.tiling: padding, the tile plan, blend weights and tiled runs (no model)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lir.tiling import (
    MIN_SIZE,
    SIZE_MULTIPLE,
    Tile,
    blend_window,
    check_tiling,
    crop,
    pad_to_valid,
    plan_tiles,
    run_tiled,
    valid_size,
)

# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("h,w", [(1, 1), (5, 300), (127, 129), (128, 128), (1000, 33), (129, 2)])
def test_pad_and_crop(h: int, w: int) -> None:
    x = torch.rand(2, 3, h, w)
    before = x.clone()
    padded, size = pad_to_valid(x)
    assert size == (h, w)
    ph, pw = padded.shape[-2:]
    for n, p in ((h, ph), (w, pw)):
        assert p % SIZE_MULTIPLE == 0 and p >= MIN_SIZE and p == valid_size(n)
        assert p - n < SIZE_MULTIPLE or n < MIN_SIZE  # no more padding than needed
    assert torch.equal(crop(padded, size), x)
    assert torch.equal(x, before)
    # Padding only repeats the image's own values.
    assert set(padded.unique().tolist()) <= set(x.unique().tolist())


def test_valid_size_untouched() -> None:
    x = torch.rand(1, 3, 128, 160)
    padded, size = pad_to_valid(x)
    assert padded is x and size == (128, 160)


def test_pad_matches_reflect_and_is_centred() -> None:
    x = torch.rand(1, 3, 127, 129)  # -> 128×160: 0 top, 1 bottom, 15 left, 16 right
    padded, _ = pad_to_valid(x)
    assert torch.equal(padded, F.pad(x, (15, 16, 0, 1), mode="reflect"))


def test_pad_repeats_reflection_when_pad_exceeds_size() -> None:
    x = torch.arange(3.0).reshape(1, 1, 1, 3)  # 0 1 2 -> ... 2 1 0 1 2 1 0 1 2 ...
    padded, _ = pad_to_valid(x)
    row = padded[0, 0, 0]
    left = (128 - 3) // 2
    assert torch.equal(row[left : left + 3], x[0, 0, 0])
    # Reflection continues with period 4 and no jumps larger than one step.
    assert (row[1:] - row[:-1]).abs().max() == 1
    assert torch.equal(row[4:], row[:-4])
    assert torch.all(padded == padded[:, :, :1])  # a 1-pixel axis is replicated


def test_pad_other_multiple_and_layouts() -> None:
    padded, size = pad_to_valid(torch.rand(10, 20), multiple=8, min_size=16)
    assert padded.shape == (16, 24) and size == (10, 20)


def test_crop_refuses_larger() -> None:
    with pytest.raises(ValueError, match="cannot crop"):
        crop(torch.rand(1, 3, 128, 128), (129, 10))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "tile,overlap,exc,match",
    [
        (100, 0, ValueError, "multiple of 32 and at least 128; got 100 — try 128"),
        (300, 8, ValueError, "got 300 — try 288"),
        (96, 0, ValueError, "try 128"),
        (256, 128, ValueError, r"overlap must be in 0..127"),
        (256, -1, ValueError, "overlap"),
        (256.0, 8, TypeError, "tile must be an int"),
        (256, 8.0, TypeError, "overlap must be an int"),
        (True, 0, TypeError, "tile"),
    ],
)
def test_check_tiling_refuses(tile, overlap, exc, match: str) -> None:
    with pytest.raises(exc, match=match):
        check_tiling(tile, overlap)


def test_check_tiling_accepts() -> None:
    check_tiling(None, 0)
    check_tiling(128, 63)
    check_tiling(512, 32)


# --------------------------------------------------------------------------- plan


def _check_plan(tiles: list[Tile], height: int, width: int, tile: int | None, overlap: int) -> None:
    th = height if tile is None else min(tile, height)
    tw = width if tile is None else min(tile, width)
    cover = torch.zeros(height, width, dtype=torch.int32)
    for t in tiles:
        assert (t.h, t.w) == (th, tw)  # all equal
        assert 0 <= t.y and t.y + t.h <= height and 0 <= t.x and t.x + t.w <= width
        cover[t.slices] += 1
    assert cover.min() >= 1  # every pixel covered
    ys = sorted({t.y for t in tiles})
    xs = sorted({t.x for t in tiles})
    assert len(tiles) == len(ys) * len(xs)  # a grid
    for starts, size, length in ((ys, th, height), (xs, tw, width)):
        assert starts[0] == 0 and starts[-1] + size == length
        steps = [b - a for a, b in zip(starts, starts[1:])]
        assert all(size - s >= overlap for s in steps)  # overlap respected
        aligned = length % SIZE_MULTIPLE == 0 and size % SIZE_MULTIPLE == 0
        if aligned:
            assert all(s % SIZE_MULTIPLE == 0 for s in starts)  # on the 32-pixel grid
        if steps:
            assert max(steps) - min(steps) <= (SIZE_MULTIPLE if aligned else 1)  # evenly spread
        if len(steps) >= 2:
            # fewest tiles: one step fewer would need steps longer than the overlap allows
            longest = (size - overlap) // SIZE_MULTIPLE * SIZE_MULTIPLE if aligned else size - overlap
            assert (length - size) / (len(steps) - 1) > longest


@pytest.mark.parametrize(
    "height,width,tile,overlap",
    [
        (128, 128, 128, 0),
        (1024, 704, 256, 16),
        (512, 384, 128, 32),
        (4096, 160, 512, 64),
        (160, 4096, 512, 255),
        (640, 640, 128, 63),
        (128, 1024, 1024, 0),
        (300, 517, 128, 10),  # unpadded sizes still plan (unaligned)
        (256, 256, None, 0),
        (256, 256, 512, 8),  # tile larger than the image: clipped, one tile
    ],
)
def test_plan_tiles(height: int, width: int, tile: int | None, overlap: int) -> None:
    tiles = plan_tiles(height, width, tile, overlap)
    _check_plan(tiles, height, width, tile, overlap)


def test_plan_tiles_examples() -> None:
    assert plan_tiles(256, 256, None, 0) == [Tile(0, 0, 256, 256)]
    assert plan_tiles(128, 320, 512, 16) == [Tile(0, 0, 128, 320)]
    assert [t.x for t in plan_tiles(128, 1024, 256, 16)] == [0, 192, 384, 576, 768]
    assert [t.y for t in plan_tiles(544, 128, 512, 16)] == [0, 32]


def test_plan_tiles_refuses() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        plan_tiles(256, 256, 200, 0)
    with pytest.raises(ValueError, match="positive"):
        plan_tiles(0, 256, 128, 0)


# --------------------------------------------------------------------------- blend weights


def test_blend_window_flat_without_neighbours() -> None:
    w = blend_window(128, 160, 16, top=False, bottom=False, left=False, right=False)
    assert w.shape == (128, 160) and w.dtype == torch.float32 and torch.all(w == 1)


def test_blend_window_ramps() -> None:
    w = blend_window(128, 128, 16, top=True, bottom=False, left=False, right=True)
    col = w[:, 0]
    assert 0 < col[0] < 0.01 and torch.all(col[16:] == 1)
    assert torch.all(col[1:16] > col[:15])  # smooth monotone rise
    assert torch.equal(w[0, :112], torch.full((112,), w[0, 0].item()))  # no ramp on the left
    assert torch.allclose(w[64, 112:], col[:16].flip(0))  # right ramp mirrors the top one
    # Two complementary ramps crossing over exactly `overlap` pixels sum to one by themselves.
    assert torch.allclose(col[:16] + col[:16].flip(0), torch.ones(16), atol=1e-6)


@pytest.mark.parametrize("height,width,tile,overlap", [(512, 384, 128, 32), (384, 416, 160, 0), (1024, 160, 512, 100)])
def test_normalised_weights_sum_to_one(height: int, width: int, tile: int, overlap: int) -> None:
    tiles = plan_tiles(height, width, tile, overlap)
    wins = [
        (t, blend_window(t.h, t.w, overlap, top=t.y > 0, bottom=t.y + t.h < height, left=t.x > 0,
                         right=t.x + t.w < width))
        for t in tiles
    ]
    total = torch.zeros(height, width, dtype=torch.float64)
    for t, win in wins:
        total[t.slices] += win
    assert total.min() > 0
    normalised = torch.zeros_like(total)
    for t, win in wins:
        normalised[t.slices] += win / total[t.slices]
    assert torch.allclose(normalised, torch.ones_like(normalised), atol=1e-12)


# --------------------------------------------------------------------------- run_tiled


def _calls(fn):
    log: list[tuple[int, ...]] = []

    def wrapped(batch: torch.Tensor) -> torch.Tensor:
        log.append(tuple(batch.shape))
        return fn(batch)

    return wrapped, log


@pytest.mark.parametrize(
    "shape,tile,overlap,batch_size",
    [
        ((1, 3, 128, 128), None, 0, 1),
        ((1, 3, 256, 384), 128, 16, 1),
        ((2, 3, 224, 256), 128, 40, 3),
        ((1, 3, 544, 160), 512, 64, 2),
        ((1, 3, 256, 256), 256, 0, 4),
    ],
)
def test_identity_gives_input_back(shape: tuple[int, ...], tile: int | None, overlap: int, batch_size: int) -> None:
    x = torch.rand(shape)
    before = x.clone()
    fn, log = _calls(lambda b: b.clone())
    y = run_tiled(fn, x, tile=tile, overlap=overlap, batch_size=batch_size)
    assert y.dtype == torch.float32 and y.device.type == "cpu" and y.shape == x.shape
    assert (y - x).abs().max() <= 1e-6
    assert torch.equal(x, before)
    n_crops = shape[0] * len(plan_tiles(shape[2], shape[3], tile, overlap))
    assert len(log) == math.ceil(n_crops / batch_size)
    assert all(s[0] <= batch_size for s in log)  # memory bounded: never more than batch_size crops


def _content_fn(b: torch.Tensor) -> torch.Tensor:
    """Depends on each crop's content (and nothing else), like a network."""
    return torch.sin(3 * b) * 0.5 + b.mean(dim=(1, 2, 3), keepdim=True)


@pytest.mark.parametrize("batch_size", [2, 7])
def test_batch_size_does_not_change_result(batch_size: int) -> None:
    x = torch.rand(2, 3, 256, 288)
    ref = run_tiled(_content_fn, x, tile=128, overlap=24, batch_size=1)
    out = run_tiled(_content_fn, x, tile=128, overlap=24, batch_size=batch_size)
    assert (out - ref).abs().max() <= 1e-6


def test_blend_is_smooth_across_seams() -> None:
    # Each tile adds its own constant: the blended result must ramp between them, not jump.
    x = torch.zeros(1, 1, 128, 512)
    offsets = iter(range(100))

    def fn(b: torch.Tensor) -> torch.Tensor:
        return b + torch.tensor([float(next(offsets)) for _ in range(b.shape[0])]).view(-1, 1, 1, 1)

    overlap = 32
    y = run_tiled(fn, x, tile=128, overlap=overlap)
    jumps = (y[..., 1:] - y[..., :-1]).abs().max()
    # A raised cosine over `overlap` pixels changes by at most π/(2·overlap) per pixel per unit offset.
    assert jumps <= math.pi / (2 * overlap) + 1e-5


def test_fn_in_place_does_not_touch_input() -> None:
    x = torch.rand(1, 3, 256, 256)
    before = x.clone()
    y = run_tiled(lambda b: b.mul_(2), x, tile=128, overlap=16)
    assert torch.equal(x, before) and torch.allclose(y, 2 * x, atol=1e-6)


def test_whole_image_when_tile_none() -> None:
    x = torch.rand(3, 3, 128, 160)
    fn, log = _calls(lambda b: b)
    run_tiled(fn, x, tile=None, overlap=0, batch_size=3)
    assert log == [(3, 3, 128, 160)]


def test_progress_callable_and_tqdm_like() -> None:
    seen: list[tuple[int, int]] = []
    x = torch.rand(2, 3, 256, 256)
    run_tiled(lambda b: b, x, tile=128, overlap=16, batch_size=3, progress=lambda d, t: seen.append((d, t)))
    total = 2 * len(plan_tiles(256, 256, 128, 16))
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert all(a[0] < b[0] for a, b in zip(seen, seen[1:]))

    class Bar:
        total = None
        n = 0

        def update(self, n: int) -> None:
            self.n += n

    bar = Bar()
    run_tiled(lambda b: b, x, tile=128, overlap=16, progress=bar)
    assert bar.total == total and bar.n == total
    bar.total, bar.n = 1000, 0  # a caller's own total is left alone
    run_tiled(lambda b: b, x, tile=128, overlap=16, progress=bar)
    assert bar.total == 1000 and bar.n == total


def test_run_tiled_refuses() -> None:
    x = torch.rand(1, 3, 256, 256)
    with pytest.raises(ValueError, match="same shape|input's shape"):
        run_tiled(lambda b: b[:, :1], x, tile=128, overlap=0)
    with pytest.raises(ValueError, match="batch_size"):
        run_tiled(lambda b: b, x, tile=128, overlap=0, batch_size=0)
    with pytest.raises(ValueError, match="N×C×H×W"):
        run_tiled(lambda b: b, x[0], tile=128, overlap=0)
    with pytest.raises(ValueError, match="try 128"):
        run_tiled(lambda b: b, x, tile=100, overlap=0)
    with pytest.raises(TypeError, match="progress"):
        run_tiled(lambda b: b, x, tile=128, overlap=0, progress=True)
