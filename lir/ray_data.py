"""Restoring a Ray Data dataset: `RestoreBatch`, a callable class for ``Dataset.map_batches``.

    import ray
    from lir.ray_data import RestoreBatch

    ds = ray.data.read_binary_files("photos/", include_paths=True)          # or read_images(...)
    ds = ds.map_batches(RestoreBatch, fn_constructor_kwargs={"task": "denoise", "column": "bytes"},
                        compute=ray.data.ActorPoolStrategy(size=4), num_cpus=2, batch_size=8)
    for row in ds.iter_rows():                                           # GPU actors: num_gpus=1
        row["image"], row["error"]                                       # restored array; "" or why not

Ray makes one `RestoreBatch` per actor, so the model is loaded once per actor and then restores
every batch that actor gets. Each row of the input column is either

* an image array, as ``ray.data.read_images`` makes (H×W or H×W×C, C = 1..4; uint8, uint16, or
  float in [0, 1]): the restored array has the same shape and dtype. Sizes may differ within a
  batch. Ray Data hands a grayscale image read together with colour ones as 1×H×W; such a row is
  restored as H×W and given back as 1×H×W (`as_image` gives the H×W view). Palette images arrive
  as palette indices: read them with ``mode="RGB"``.
* the bytes of an image file, as ``ray.data.read_binary_files`` makes: decoded here with Pillow
  (converted to ``mode`` when given), restored in the image's own mode (palette images come back
  RGB or RGBA), and handed back as an H×W×C array (C = 1 for grayscale) of the mode's dtype.

A row that cannot be restored (a corrupt file, an unsupported dtype or channel count, float values
outside [0, 1]) gets a one-line message in the ``error`` column and an empty array (size 0, the
batch's dtype and number of dimensions) as its image; the other rows are restored as usual, with
an empty string as their error. Keep the good rows with ``ds.filter(lambda row: not row["error"])``.
``read_images`` itself stops the whole dataset at the first corrupt file: read bytes when a folder
may hold one. Failures of the model or the device still fail the batch.

Ray Data's tensor columns hold one dtype: a dataset that mixes 8-bit and 16-bit files fails (or
is silently widened) in Ray itself; give ``mode="RGB"`` here (or to ``read_images``) for such folders.

Needs the ``ray`` extra (``pip install "lir-restore[ray]"``); ``import lir`` never imports this module.
"""

from __future__ import annotations

import io
import os
import struct
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Optional, Union, cast

import numpy as np
import torch
from PIL import Image

from lir import images
from lir.devices import DeviceLike, DtypeLike
from lir.restorer import TileOption, _check_tile, load_model

__all__ = ["RestoreBatch", "ROW_ERRORS", "as_image"]

ROW_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, Image.DecompressionBombError)
"""Exceptions that fail one row (reported in the error column) rather than the whole batch: bad input.
OSError covers undecodable and truncated files (Pillow's ``UnidentifiedImageError`` is one)."""

# Same-sized images are restored together as one N×C×H×W tensor (on a GPU their tiles share the
# device's batches), up to this many pixels at a time so a batch of large images is not copied to
# float32 all at once.
_GROUP_PIXELS = 1 << 23
_STACKABLE = frozenset({"u1", "u2", "f2", "f4", "f8"})  # dtype kind + size: torch.from_numpy takes it, lir too


def as_image(arr: np.ndarray) -> np.ndarray:
    """A row of an image column as H×W or H×W×C (C = 2..4), ready for ``PIL.Image.fromarray``.

    Gives the H×W view of a grayscale row stored as 1×H×W (Ray Data's form when it shares a block
    with H×W×C images: a leading 1 and more than 4 "channels") or as H×W×1 (`RestoreBatch`'s form for
    decoded files), and any other array as it is.
    """
    if arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[2] > 4:
        return arr[0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[:, :, 0]
    return arr


def _message(exc: BaseException, path: Any) -> str:
    text = " ".join(str(exc).split())
    where = f"{path}: " if isinstance(path, str) else ""
    return f"{where}{type(exc).__name__}: {text}" if text else f"{where}{type(exc).__name__}"


def _actor_cpus() -> Optional[int]:
    """CPUs Ray assigned to the current actor or task (rounded down, at least 1); None outside Ray."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - no Ray, or not a worker: leave torch's threads as they are
        return None
    return max(1, int(cpus)) if cpus else None


def _decode(data: Union[bytes, bytearray, memoryview], mode: Optional[str]) -> Image.Image:
    """An image file's bytes -> a loaded PIL image (decoding errors raised here, not later)."""
    try:
        img = Image.open(io.BytesIO(bytes(data)))
    except Image.UnidentifiedImageError:
        # Pillow's own message names only an in-memory buffer; say what it means for the row.
        raise Image.UnidentifiedImageError(
            f"not an image file Pillow can read ({len(data)} bytes: unknown format or corrupt header)"
        ) from None
    try:
        img.load()
    except (SyntaxError, EOFError, IndexError, struct.error) as exc:
        # Pillow's plug-ins signal some corrupt data this way; for the row it is an unreadable file.
        raise OSError(f"corrupt image file ({type(exc).__name__}: {exc})") from exc
    return img.convert(mode) if mode is not None and img.mode != mode else img


class RestoreBatch:
    """Restores the images of a Ray Data batch; give the class to ``Dataset.map_batches``.

    Ray instantiates it once per actor with ``fn_constructor_kwargs`` (the model is loaded then) and
    calls it on numpy batches (``batch_format="numpy"``, Ray's default). See the module docs for the
    accepted rows and how failed rows are reported.

    Example:
        >>> ds.map_batches(RestoreBatch, fn_constructor_kwargs={"task": "denoise"},  # doctest: +SKIP
        ...                compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1, batch_size=8)
    """

    def __init__(
        self,
        task: str = "denoise",
        *,
        weights: Union[str, os.PathLike, None] = None,
        device: DeviceLike = None,
        dtype: DtypeLike = None,
        tile: TileOption = "auto",
        tile_overlap: int = 32,
        column: str = "image",
        output_column: str = "image",
        error_column: str = "error",
        mode: Optional[str] = None,
        threads: Optional[int] = None,
    ) -> None:
        """Load the model (once per actor).

        Args:
            task, weights, device, dtype: as for `lir.load_model`. ``device=None`` picks CUDA when
                the actor has a GPU (``map_batches(..., num_gpus=1)``), else the CPU.
            tile, tile_overlap: as for `lir.restore`.
            column: the column holding the images (arrays or encoded file bytes).
            output_column: where the restored arrays go; the default ``"image"`` replaces the input
                column of a ``read_images`` dataset. Other columns are passed through.
            error_column: the column that gets ``""`` for restored rows and a one-line message (with
                the ``path`` column's value when there is one) for rows that failed.
            mode: a PIL mode (e.g. ``"RGB"``) decoded files are converted to, as ``read_images``'
                ``mode=``; None keeps each file's mode. Arrays are never converted.
            threads: torch threads for this actor; None uses the CPUs Ray assigned to it
                (``num_cpus``), and leaves torch's setting alone outside Ray.

        Raises:
            ValueError / TypeError: bad arguments (before anything is loaded), or the loading errors of
                `lir.load_model`.
        """
        _check_tile(tile, tile_overlap)
        for name, value in (("column", column), ("output_column", output_column), ("error_column", error_column)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty column name; got {value!r}")
        if output_column == error_column:
            raise ValueError(f"output_column and error_column must differ; both are {output_column!r}")
        self._empty_dtype = np.dtype(np.uint8)  # of failed rows' placeholders when nothing else tells
        if mode is not None:
            if not isinstance(mode, str):
                raise TypeError(f"mode must be a PIL mode name or None; got {type(mode).__name__}")
            try:
                sample = Image.new(mode, (1, 1))
            except ValueError:
                raise ValueError(f"mode {mode!r} is not a PIL mode; e.g. 'RGB', 'RGBA', 'L', 'I;16'") from None
            images.to_batch(sample)  # a mode lir cannot restore is refused here, not on every row
            self._empty_dtype = np.asarray(sample).dtype
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None; got {threads!r}")
        threads = threads or _actor_cpus()
        if threads is not None:
            torch.set_num_threads(threads)
        self.column = column
        self.output_column = output_column
        self.error_column = error_column
        self.mode = mode
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.restorer = load_model(task, weights=weights, device=device, dtype=dtype)

    def __repr__(self) -> str:
        return f"RestoreBatch({self.restorer!r}, column={self.column!r}, output_column={self.output_column!r})"

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Restore every row of ``batch[column]``; returns the batch with the output and error columns.

        Raises:
            TypeError: ``batch`` is not a dict of columns (use ``batch_format="numpy"``).
            ValueError: the batch has no column named ``column``.
        """
        if not isinstance(batch, Mapping):
            raise TypeError(f"RestoreBatch takes numpy batches (a dict of columns; map_batches' default "
                            f"batch_format='numpy'); got {type(batch).__name__}")
        if self.column not in batch:
            raise ValueError(f"the batch has no column {self.column!r}; its columns are {sorted(batch)} "
                             "(pass column=... to RestoreBatch)")
        rows = batch[self.column]
        paths = batch.get("path")
        results: list[Optional[np.ndarray]] = [None] * len(rows)
        # "" rather than None for restored rows: Ray Data stores a batch's all-None column as Arrow's
        # null type, and later numpy batches of such a block hold float NaN instead of None.
        errors = [""] * len(rows)

        arrays: dict[int, np.ndarray] = {}
        for i, value in enumerate(rows):
            try:
                if isinstance(value, np.ndarray) and value.dtype != object:
                    arrays[i] = as_image(value)  # restored below, same-sized ones together
                elif isinstance(value, (bytes, bytearray, memoryview)):
                    results[i] = self._restore_file(value)
                else:
                    raise TypeError(f"expected an image array or the bytes of an image file; got "
                                    f"{type(value).__name__}")
            except ROW_ERRORS as exc:
                errors[i] = _message(exc, None if paths is None else paths[i])
        for i, outcome in self._restore_arrays(arrays).items():
            if isinstance(outcome, BaseException):
                errors[i] = _message(outcome, None if paths is None else paths[i])
            else:
                results[i] = outcome.reshape(rows[i].shape)

        # A failed row gets an empty array, not None: a column holding both would leave Ray's tensor
        # type for pickled objects, which Ray then cannot combine with other batches' tensor blocks.
        restored = next((r for r in results if r is not None), None)
        for i, result in enumerate(results):
            if result is None:  # failed
                like = rows[i] if isinstance(rows[i], np.ndarray) and rows[i].dtype != object else restored
                ndim, dtype = (like.ndim, like.dtype) if like is not None else (3, self._empty_dtype)
                results[i] = np.empty((0,) * ndim, dtype=dtype)

        out = dict(batch)
        out[self.output_column] = _column(cast("list[np.ndarray]", results))  # every row filled now
        out[self.error_column] = np.array(errors, dtype=object)
        return out

    # -- restoring ------------------------------------------------------------------------------

    def _restore(self, image: Any) -> Any:
        return self.restorer(image, tile=self.tile, tile_overlap=self.tile_overlap, progress=False)

    def _restore_file(self, data: Union[bytes, bytearray, memoryview]) -> np.ndarray:
        """Decode, restore in the image's own mode, and return it as H×W×C."""
        arr = np.asarray(self._restore(_decode(data, self.mode)))
        # Always three dimensions: Ray cannot hold H×W and H×W×C rows in one tensor column.
        return arr[:, :, None] if arr.ndim == 2 else arr

    def _restore_one(self, arr: np.ndarray) -> np.ndarray:
        if arr.ndim == 3 and arr.shape[2] == 2:
            # Gray + alpha (an LA file through read_images): restore the gray plane, keep the alpha.
            return np.stack([self._restore(np.ascontiguousarray(arr[:, :, 0])), arr[:, :, 1]], axis=2)
        return self._restore(arr)

    def _restore_stack(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Same-shaped H×W[×C] arrays through the restorer as one N×C×H×W tensor; same dtype back."""
        dtype = arrays[0].dtype
        stack = np.stack(arrays)
        native = stack.astype(stack.dtype.newbyteorder("="), copy=False)  # torch takes native byte order only
        if native.ndim == 3:
            native = native[:, :, :, None]
        alpha = native[..., 1:] if native.shape[3] == 2 else None
        colour = native[..., :1] if alpha is not None else native
        tensor = torch.from_numpy(np.ascontiguousarray(colour)).permute(0, 3, 1, 2)
        restored = self._restore(tensor).permute(0, 2, 3, 1).numpy()
        if alpha is not None:
            restored = np.concatenate([restored, alpha], axis=3)
        # The caller's dtype, byte order included (np.stack may already have made it native).
        return list(restored.reshape(stack.shape).astype(dtype, copy=False))

    def _restore_arrays(self, arrays: Mapping[int, np.ndarray]) -> dict[int, Union[np.ndarray, BaseException]]:
        """Restore arrays, same-sized ones together; a failing group is retried row by row."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        singles: list[int] = []
        for i, arr in arrays.items():
            stackable = (f"{arr.dtype.kind}{arr.dtype.itemsize}" in _STACKABLE and arr.ndim in (2, 3)
                         and (arr.ndim == 2 or 1 <= arr.shape[2] <= 4) and arr.size > 0)
            if stackable:
                groups[(arr.shape, arr.dtype.str)].append(i)
            else:
                singles.append(i)  # restored alone: lir's numpy checks give the row its message
        outcomes: dict[int, Union[np.ndarray, BaseException]] = {}
        for (shape, _), members in groups.items():
            per_chunk = max(1, _GROUP_PIXELS // (shape[0] * shape[1]))
            for start in range(0, len(members), per_chunk):
                chunk = members[start : start + per_chunk]
                if len(chunk) == 1:
                    singles.extend(chunk)
                    continue
                try:
                    outcomes.update(zip(chunk, self._restore_stack([arrays[i] for i in chunk])))
                except ROW_ERRORS:
                    singles.extend(chunk)  # one bad row (e.g. a float above 1) fails the stack: find it
        for i in singles:
            try:
                outcomes[i] = self._restore_one(arrays[i])
            except ROW_ERRORS as exc:
                outcomes[i] = exc
        return outcomes


def _column(values: list[np.ndarray]) -> np.ndarray:
    """A batch column: one stacked array when every row has one shape and dtype, else an object array."""
    if values and all(v.shape == values[0].shape and v.dtype == values[0].dtype for v in values):
        return np.stack(values)
    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        column[i] = value  # element by element: numpy would otherwise try to broadcast the arrays
    return column
