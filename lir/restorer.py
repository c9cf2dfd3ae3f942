"""Restoring images: `Restorer`, `load_model` and `restore`.

The flow of one call: the caller's image becomes a float32 CPU batch (`lir.images.to_batch`), is
reflect-padded to a size the network accepts (`lir.tiling.pad_to_valid`), goes through the network
tile by tile (`lir.tiling.run_tiled`; only tiles travel to the device, the image and the output
canvas stay on the CPU), is cropped back and turned into the caller's kind of image again
(`lir.images.from_batch`).
"""

from __future__ import annotations

import collections
import copy
import os
import sys
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import torch

from lir import images, tiling
from lir.devices import (
    DeviceLike,
    DtypeLike,
    activation_bytes,
    memory_budget,
    pick_device,
    pick_dtype,
    predicted_seconds,
)
from lir.network import LIR

if TYPE_CHECKING:
    from lir.network import LIRConfig

__all__ = [
    "Restorer",
    "load_model",
    "restore",
    "clear_cache",
    "TileOption",
    "ProgressOption",
    "MIN_TILE",
]

TileOption = Union[int, str, None]
"""What ``tile=`` accepts: pixels (a multiple of 32, at least 128), ``"auto"`` or ``None`` (whole image)."""
ProgressOption = Union[bool, None, Callable[[int, int], None], Any]
"""What ``progress=`` accepts: ``None`` (a bar for long jobs in a terminal), ``True``, ``False``,
a callable ``progress(done, total)`` or a tqdm-like object with ``update(n)``."""

MIN_TILE = tiling.MIN_SIZE
"""Smallest tile: out-of-memory back-off stops here (the network needs at least 128 pixels)."""

# Most tiles sent to an accelerator in one batch: beyond this a batch is not faster, and a single
# huge batch would hold up the progress bar.
_MAX_BATCH = 16
# Show a progress bar (progress=None, in a terminal) for jobs with more tiles than this, or
# predicted to take longer than _BAR_SECONDS.
_BAR_TILES = 8
_BAR_SECONDS = 10.0


class Restorer:
    """A restoration network ready for inference, callable on images.

    Usually made by `load_model`. Calling it restores one image (or a batch tensor) and returns the
    same kind of object: PIL image, numpy array, torch tensor (on its own device, same dtype and
    shape), or a path (returned as a PIL image). Safe to call from several threads at once: a call
    keeps all its state local and the network is only read.

    Attributes:
        network: the `lir.LIR` network, in eval mode with gradients off, on `device` in `dtype`.
        device: where tiles are restored.
        dtype: precision of the network's weights and of the tiles on the device.
        name: where the weights came from (manifest model name, file path, or "<state dict>").
    """

    def __init__(
        self,
        network: LIR,
        *,
        device: DeviceLike = None,
        dtype: DtypeLike = None,
        name: str = "<network>",
    ) -> None:
        """Wrap ``network`` (moved and cast in place to ``device``/``dtype``, see `pick_device`/`pick_dtype`)."""
        if not isinstance(network, torch.nn.Module):
            raise TypeError(f"network must be an lir.LIR module, got {type(network).__name__}")
        self.device: torch.device = pick_device(device)
        self.dtype: torch.dtype = pick_dtype(self.device, dtype)
        self.name = name
        network.eval().requires_grad_(False)
        # Half precision can overflow to inf/NaN on unusual inputs; a float32 copy (tiny: 29 MB for
        # the default model) redoes such tiles. Made before the cast so it keeps full precision.
        self._fallback: Optional[LIR] = None
        if self.dtype in (torch.float16, torch.bfloat16):
            self._fallback = copy.deepcopy(network).to(
                device=self.device, dtype=torch.float32, memory_format=torch.channels_last
            )
        # channels_last: the fast form's LayerNorm reads it without copies and oneDNN/cuDNN convolve
        # it fastest (1.5-2× on CPU, see benchmarks/bench_network.py).
        self.network: LIR = network.to(device=self.device, dtype=self.dtype, memory_format=torch.channels_last)
        self._warned_nonfinite = False
        self._warn_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Restorer(name={self.name!r}, device={str(self.device)!r}, dtype={self.dtype})"

    @property
    def config(self) -> LIRConfig:
        """The network's `lir.LIRConfig`."""
        return self.network.config

    # -- running ------------------------------------------------------------------------------

    def _forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """Restore one CPU batch of tiles on the device; float32 CPU result (the `run_tiled` fn)."""
        x = tiles.to(device=self.device, dtype=self.dtype, memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self.network(x)
            if self._fallback is not None and not bool(torch.isfinite(y).all()):
                self._warn_nonfinite()
                y = self._fallback(tiles.to(device=self.device, dtype=torch.float32, memory_format=torch.channels_last))
        return y.to(device="cpu", dtype=torch.float32)

    def _warn_nonfinite(self) -> None:
        with self._warn_lock:
            if self._warned_nonfinite:
                return
            self._warned_nonfinite = True
        warnings.warn(
            f"{self.dtype} output held NaN or infinity; redoing such tiles in float32 "
            "(pass dtype=torch.float32 to avoid the double work)",
            RuntimeWarning,
            stacklevel=4,
        )

    def _plan(self, height: int, width: int, count: int, tile: TileOption, overlap: int) -> tuple[Optional[int], int]:
        """(tile, batch size) for ``count`` padded images of ``height``×``width``."""
        dim, dtype = self.config.dim, self.dtype
        budget: Optional[int] = None
        if tile == "auto" or self.device.type != "cpu":
            budget = memory_budget(self.device)
        if tile == "auto":
            assert budget is not None
            if activation_bytes(height, width, dim=dim, dtype=dtype) <= budget:
                tile = None  # the whole image fits: the best quality and no overlap work
            else:
                floor = max(MIN_TILE, 2 * overlap + tiling.SIZE_MULTIPLE)
                t = max(height, width) // tiling.SIZE_MULTIPLE * tiling.SIZE_MULTIPLE
                while t > floor and activation_bytes(min(t, height), min(t, width), dim=dim, dtype=dtype) > budget:
                    t -= tiling.SIZE_MULTIPLE
                # The largest tile that fits: LIR's global operations (channel attention, whole-map
                # patch attention) make smaller tiles differ more from the whole-image result.
                tile = max(t, floor)
        if self.device.type == "cpu" or budget is None:
            return tile, 1  # the CPU gains nothing from batching tiles, and it costs memory
        th = height if tile is None else min(tile, height)
        tw = width if tile is None else min(tile, width)
        crops = count * len(tiling.plan_tiles(height, width, tile, overlap))
        per_tile = activation_bytes(th, tw, dim=dim, dtype=dtype)
        return tile, max(1, min(_MAX_BATCH, crops, budget // per_tile))

    def _progress_bar(self, progress: ProgressOption, crops: int, pixels: int) -> Any:
        """A tqdm bar, the caller's hook, or None."""
        if progress is False:
            return None
        if progress is None:
            parameters = sum(p.numel() for p in self.network.parameters())
            long_job = crops > _BAR_TILES or predicted_seconds(
                pixels, parameters=parameters, device=self.device
            ) > _BAR_SECONDS
            stderr = sys.stderr
            if not (long_job and stderr is not None and hasattr(stderr, "isatty") and stderr.isatty()):
                return None
        elif progress is not True:
            return progress  # a callable or tqdm-like object; run_tiled validates it
        from tqdm import tqdm  # imported lazily: most calls show no bar

        return tqdm(total=crops, unit="tile", desc="lir", leave=False, dynamic_ncols=True)

    def __call__(
        self,
        image: images.ImageInput,
        *,
        tile: TileOption = "auto",
        tile_overlap: int = 32,
        progress: ProgressOption = None,
    ) -> Any:
        """Restore ``image`` and return the result as the same kind of object.

        Args:
            image: a PIL image, a numpy array (H×W, H×W×C; uint8, uint16 or float in [0, 1]), a torch
                tensor (H×W, C×H×W, N×C×H×W; on any device), or a path (see `lir.images`). Never
                modified.
            tile: ``"auto"`` (the largest tile whose predicted memory fits the device's budget; the
                whole image when it fits), ``None`` (the whole image in one pass), or a tile size in
                pixels (a multiple of 32, at least 128). Tiles overlap and are blended seamlessly.
            tile_overlap: overlap between neighbouring tiles in pixels (0 <= overlap < tile / 2).
            progress: ``None`` shows a tqdm bar only for long jobs when stderr is a terminal;
                ``True`` always, ``False`` never; or a callable ``progress(done, total)`` / a tqdm-like
                object, updated per batch of tiles.

        Returns:
            The restored image: same type, shape, dtype, mode (and device, for tensors) as ``image``.

        Raises:
            TypeError / ValueError: an unsupported image or bad ``tile``/``tile_overlap``.
            torch.cuda.OutOfMemoryError: even 128-pixel tiles do not fit (larger ones are retried
                with half the tile size, with a warning).
        """
        _check_tile(tile, tile_overlap)
        batch, spec = images.to_batch(image)
        padded, size = tiling.pad_to_valid(batch)
        del batch
        count, _, height, width = padded.shape
        t, batch_size = self._plan(height, width, count, tile, tile_overlap)
        overlap = tile_overlap
        while True:
            if t is not None:
                overlap = min(tile_overlap, (t - 1) // 2)
            crops = count * len(tiling.plan_tiles(height, width, t, overlap))
            bar = self._progress_bar(progress, crops, count * height * width)
            try:
                out = tiling.run_tiled(self._forward, padded, tile=t, overlap=overlap,
                                       batch_size=batch_size, progress=bar)
                break
            except torch.cuda.OutOfMemoryError:
                # Halve the tile and start over; give up below the network's minimum size.
                current = t if t is not None else max(height, width)
                smaller = current // 2 // tiling.SIZE_MULTIPLE * tiling.SIZE_MULTIPLE
                if smaller < MIN_TILE or current <= MIN_TILE:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                warnings.warn(
                    f"out of memory on {self.device} with {current}-pixel tiles; retrying with {smaller}-pixel tiles",
                    RuntimeWarning,
                    stacklevel=2,
                )
                t = smaller
            finally:
                if bar is not None and bar is not progress and hasattr(bar, "close"):
                    bar.close()
        return images.from_batch(tiling.crop(out, size), spec)


def _check_tile(tile: TileOption, overlap: int, *, names: tuple[str, str] = ("tile", "tile_overlap")) -> None:
    """Validate ``tile``/``tile_overlap`` before any work (clear errors, nothing loaded in vain)."""
    if isinstance(tile, str):
        if tile != "auto":
            raise ValueError(f"{names[0]} must be 'auto', None or a number of pixels; got {tile!r}")
        tiling.check_tiling(None, overlap, names=names)
    else:
        tiling.check_tiling(tile, overlap, names=names)


# -- loading ----------------------------------------------------------------------------------------


def load_model(
    task: str = "denoise",
    *,
    weights: Union[str, os.PathLike, Mapping[str, torch.Tensor], None] = None,
    device: DeviceLike = None,
    dtype: DtypeLike = None,
) -> Restorer:
    """Load a restoration model and return a `Restorer` ready to call.

    Args:
        task: "denoise", "deblur", "derain" or "dehaze"; picks the task's default published model
            when ``weights`` is None.
        weights: a ``.safetensors`` file, a manifest model name (see `lir.list_models`), or a state
            dict with the authors' keys. Authors' ``.pth`` files: convert them with `lir convert`.
        device: None picks CUDA, then Apple MPS, then the CPU; or "cpu", "cuda:1", a torch.device.
        dtype: None picks bfloat16 on CUDA when supported (else float16), float32 on CPU and MPS.

    Raises:
        ValueError: unknown task (the valid ones are listed), no published model for the task yet,
            a bad device/dtype, or weights that are not an LIR network's.
        FileNotFoundError: ``weights`` names a missing file.
        lir.weights.WeightsNotAvailableError: the model is neither bundled nor downloadable.
    """
    from lir.weights import load_weights  # lazily: keeps `import lir` from reading the manifest

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)  # validate before the (slow) load
    loaded = load_weights(task, weights)
    return Restorer(loaded.network, device=dev, dtype=dt, name=loaded.name)


class _Slot:
    """One cache entry; its own lock lets different models load in parallel, the same one once."""

    __slots__ = ("lock", "restorer")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.restorer: Optional[Restorer] = None


_CACHE_SIZE = 4  # restorers kept (each holds its weights on its device)
_cache: "collections.OrderedDict[tuple, _Slot]" = collections.OrderedDict()
_cache_lock = threading.Lock()


def _model_identity(task: str, weights: Union[str, os.PathLike, None]) -> Optional[tuple]:
    """A cache key part that changes whenever the weights would: None means "do not cache".

    Manifest models are keyed by name and sha256; files by resolved path, mtime and size (so an
    edited file is reloaded). In-memory state dicts are never cached: an id() could be reused by a
    different dict after the first is garbage collected.
    """
    from lir.manifest import load_manifest

    manifest = load_manifest()
    manifest.check_task(task)  # also on a cache hit: an unknown task is always an error
    if weights is None:
        entry = manifest.default_model(task)  # raises when the task has no model yet
        return ("model", entry.name, entry.sha256)
    if isinstance(weights, str) and weights in manifest.models and not os.path.exists(weights):
        entry = manifest.models[weights]
        return ("model", entry.name, entry.sha256)
    if isinstance(weights, (str, os.PathLike)):
        try:
            path = Path(weights).resolve()
            st = path.stat()
        except OSError:
            return None  # load_weights raises the proper error
        return ("file", str(path), st.st_mtime_ns, st.st_size)
    return None


def _cached_restorer(task: str, weights: Any, device: DeviceLike, dtype: DtypeLike) -> Restorer:
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    identity = None if isinstance(weights, Mapping) else _model_identity(task, weights)
    if identity is None:
        return load_model(task, weights=weights, device=dev, dtype=dt)
    key = (identity, str(dev), dt)
    with _cache_lock:
        slot = _cache.get(key)
        if slot is None:
            slot = _cache[key] = _Slot()
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    with slot.lock:
        if slot.restorer is None:
            try:
                slot.restorer = load_model(task, weights=weights, device=dev, dtype=dt)
            except BaseException:
                with _cache_lock:
                    if _cache.get(key) is slot:
                        del _cache[key]
                raise
        return slot.restorer


def clear_cache() -> None:
    """Forget the restorers `restore` keeps (frees their weights once no one else holds them)."""
    with _cache_lock:
        _cache.clear()


def restore(
    image: images.ImageInput,
    task: str = "denoise",
    *,
    weights: Union[str, os.PathLike, Mapping[str, torch.Tensor], None] = None,
    device: DeviceLike = None,
    dtype: DtypeLike = None,
    tile: TileOption = "auto",
    tile_overlap: int = 32,
    progress: ProgressOption = None,
) -> Any:
    """Restore one image with the task's model and return it as the same kind of object.

    A one-call form of ``load_model(task, weights=..., device=..., dtype=...)(image, tile=..., ...)``.
    Loaded models are cached per (model, device, dtype) — manifest models and files (keyed by path,
    modification time and size), not in-memory state dicts — so repeated calls do not reload; the
    cache is safe to use from several threads. See `load_model` and `Restorer.__call__` for the
    arguments.

    Example:
        >>> import lir
        >>> from PIL import Image
        >>> clean = lir.restore(Image.open("noisy.png"), task="denoise")  # doctest: +SKIP
    """
    _check_tile(tile, tile_overlap)
    restorer = _cached_restorer(task, weights, device, dtype)
    return restorer(image, tile=tile, tile_overlap=tile_overlap, progress=progress)
