"""Images in, the same kind of image out.

The network works on one representation only: a float32 CPU tensor ``N×3×H×W``
with values in ``[0, 1]``. :func:`to_batch` turns whatever the caller handed us
into that, together with an :class:`ImageSpec` holding what is needed to rebuild
the caller's kind of image; :func:`from_batch` does the rebuilding.

Accepted inputs
---------------
* **PIL images** in modes ``RGB``, ``RGBA``, ``L``, ``LA``, ``1``, ``P``, ``PA``,
  ``CMYK``, ``YCbCr``, ``I;16``, ``I;16L``, ``I;16B``, ``I;16N``, ``I`` (values
  must be 16-bit, 0..65535) and ``F`` (values in [0, 1]). Every mode comes back
  as itself, except palette images: a palette cannot hold restored colours, so
  ``P`` comes back as ``RGB`` (``RGBA`` when it has transparency) and ``PA`` as
  ``RGBA``. ``CMYK`` and ``YCbCr`` are restored in RGB with Pillow's own
  conversions and converted back. ``1`` is restored as ``L`` and thresholded at
  50 % (no dithering). ``img.info`` (EXIF, ICC profile, DPI, ...) is copied to
  the result. Only the current frame of a multi-frame image is used. A PIL
  image is used as it is (no EXIF rotation), so the result lines up with it;
  no colour management is applied (as with Pillow's own ``convert``).
* **Paths** (``str`` / ``os.PathLike``): opened with Pillow, EXIF orientation
  applied (the result is upright), returned as a PIL image as above.
* **numpy arrays** ``H×W``, ``H×W×1``, ``H×W×3``, ``H×W×4`` of ``uint8``,
  ``uint16`` (either byte order) or ``float16/32/64`` in [0, 1].
* **torch tensors** ``H×W``, ``C×H×W``, ``N×C×H×W`` (``C`` in 1, 3, 4) of
  ``uint8``, ``uint16`` or any float dtype in [0, 1], on any device; the result
  goes back to the same device and dtype (detached from autograd).

Guarantees
----------
* The result has the input's type, dtype, mode, shape and device; the caller's
  object is never modified.
* Alpha is carried through untouched: the result holds exactly the input's alpha.
* Grayscale goes through the network as three equal channels and comes back as
  one (the mean of the three outputs).
* 16-bit stays 16-bit: float32 holds every 16-bit value exactly, so nothing is
  squeezed through 8 bits. Integer outputs are rounded to nearest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Union

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["ImageInput", "ImageSpec", "to_batch", "from_batch"]

#: Everything :func:`to_batch` accepts.
ImageInput = Union[Image.Image, np.ndarray, torch.Tensor, str, os.PathLike]

_ACCEPTED = "a PIL image, a numpy array, a torch tensor or a path (str / os.PathLike)"

# Integer dtypes and the value standing for 1.0; floats map to None (already in [0, 1]).
_NUMPY_DTYPES: dict[tuple[str, int], float | None] = {
    ("u", 1): 255.0,
    ("u", 2): 65535.0,
    ("f", 2): None,
    ("f", 4): None,
    ("f", 8): None,
}
_NUMPY_ACCEPTED = "uint8, uint16, float16, float32 or float64"

_TORCH_DTYPES: dict[torch.dtype, float | None] = {
    torch.uint8: 255.0,
    torch.uint16: 65535.0,
    torch.float16: None,
    torch.bfloat16: None,
    torch.float32: None,
    torch.float64: None,
}
_TORCH_ACCEPTED = "uint8, uint16 or a float dtype (float16, bfloat16, float32, float64)"

# PIL mode -> (mode whose pixels we read and write, mode handed back).
# Modes the network cannot see directly are converted with Pillow's own
# conversions, which are the ones Pillow users already get from .convert().
_PIL_MODES: dict[str, tuple[str, str]] = {
    "RGB": ("RGB", "RGB"),
    "RGBA": ("RGBA", "RGBA"),
    "L": ("L", "L"),
    "LA": ("LA", "LA"),
    "1": ("L", "1"),
    "PA": ("RGBA", "RGBA"),
    "CMYK": ("RGB", "CMYK"),
    "YCbCr": ("RGB", "YCbCr"),
    "I;16": ("I;16", "I;16"),
    "I;16L": ("I;16L", "I;16L"),
    "I;16B": ("I;16B", "I;16B"),
    "I;16N": ("I;16N", "I;16N"),
    "I": ("I", "I"),
    "F": ("F", "F"),
    # "P" is decided per image (RGB or RGBA), see _pil_to_batch.
}
_PIL_ACCEPTED = ", ".join(["P", *_PIL_MODES])


@dataclass(frozen=True)
class ImageSpec:
    """How to rebuild the caller's image from the network's ``N×3×H×W`` output.

    Made by :func:`to_batch`, consumed by :func:`from_batch`; treat it as opaque.

    Attributes:
        kind: ``"pil"`` (also for paths), ``"numpy"`` or ``"torch"``.
        layout: shape convention of the caller's object: ``"HW"``, ``"HWC"``
            (numpy, PIL pixel arrays) or ``"HW"``, ``"CHW"``, ``"NCHW"`` (torch).
        dtype: numpy or torch dtype of the caller's pixels.
        scale: value standing for 1.0 for integer pixels (255, 65535), None for floats.
        gray: the image has one colour channel (restored as three equal ones).
        batch, height, width: size of the batch handed to the network.
        device: torch device of the caller's tensor (None for other kinds).
        mode: PIL mode handed back (None for other kinds).
        pixel_mode: PIL mode whose pixels were read (differs from ``mode`` for
            ``1``, ``CMYK``, ``YCbCr``).
        alpha: the caller's alpha channel(s), exactly as given, or None.
        info: PIL ``info`` dict (EXIF, ICC profile, DPI, ...) to put on the result.
    """

    kind: str
    layout: str
    dtype: Any
    scale: float | None
    gray: bool
    batch: int
    height: int
    width: int
    device: torch.device | None = None
    mode: str | None = None
    pixel_mode: str | None = None
    alpha: np.ndarray | torch.Tensor | None = field(default=None, repr=False, compare=False)
    info: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return (self.height, self.width)

    @property
    def has_alpha(self) -> bool:
        """Whether the caller's image has an alpha channel (carried through untouched)."""
        return self.alpha is not None


# --------------------------------------------------------------------------- checks


def _check_values(planes: torch.Tensor, scale: float | None, what: str) -> torch.Tensor:
    """Turn float32 pixel values into [0, 1], refusing NaN/inf and out-of-range values."""
    if scale is not None:
        # Integer dtypes cannot hold NaN; only signed ones (PIL "I") can be out of range.
        lo, hi = planes.aminmax()
        if lo < 0 or hi > scale:
            raise ValueError(
                f"{what} must hold 16-bit values in 0..{int(scale)}; got {lo.item():g}..{hi.item():g}"
            )
        return planes.div_(scale)
    if not torch.isfinite(planes).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    lo, hi = planes.aminmax()
    if lo < 0 or hi > 1:
        hint = "divide by 255 (8-bit data) or 65535 (16-bit data)" if hi > 1 else "use (x + 1) / 2 for [-1, 1] data"
        raise ValueError(
            f"float images must be in [0, 1]; got min {lo.item():g}, max {hi.item():g} — {hint}"
        )
    return planes


def _check_shape(shape: tuple[int, ...], what: str) -> None:
    if 0 in shape:
        raise ValueError(f"{what} is empty (shape {tuple(shape)})")


def _split(planes: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """N×C×H×W colour planes in [0, 1] (C = 1 or 3) -> the network's N×3×H×W, gray flag."""
    if planes.shape[1] == 1:
        return planes.repeat(1, 3, 1, 1), True
    return planes, False


# --------------------------------------------------------------------------- numpy


def _numpy_to_batch(arr: np.ndarray, *, channels: tuple[int, ...] = (1, 3, 4), what: str = "numpy array",
                    scale: float | None = None) -> tuple[torch.Tensor, ImageSpec]:
    """numpy H×W or H×W×C -> batch. ``channels``/``scale`` are widened by the PIL path (LA, mode I)."""
    key = (arr.dtype.kind, arr.dtype.itemsize)
    if scale is None:
        if key not in _NUMPY_DTYPES:
            raise TypeError(
                f"numpy dtype {arr.dtype} is not supported; use {_NUMPY_ACCEPTED} "
                f"(e.g. arr.astype(np.uint8) for 8-bit data held in a wider integer type)"
            )
        scale = _NUMPY_DTYPES[key]
    if arr.ndim not in (2, 3):
        raise ValueError(f"{what} must be H×W or H×W×C; got {arr.ndim} dimensions (shape {arr.shape})")
    _check_shape(arr.shape, what)
    hwc = arr[:, :, None] if arr.ndim == 2 else arr
    c = hwc.shape[2]
    if c not in channels:
        hint = ""
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
            hint = "; it looks channels-first: numpy images are H×W×C, use arr.transpose(1, 2, 0)"
        raise ValueError(
            f"{what} has {c} channels; accepted: {', '.join(map(str, channels))} (H×W×C){hint}"
        )
    colour_c = 3 if c >= 3 else 1
    alpha = hwc[:, :, colour_c:].copy() if c > colour_c else None
    # Always a fresh native-endian float32 copy: the caller's array is never touched or shared.
    planes = torch.from_numpy(np.array(hwc[:, :, :colour_c].transpose(2, 0, 1), dtype=np.float32, order="C"))
    planes = _check_values(planes, scale, what)[None]
    batch, gray = _split(planes)
    spec = ImageSpec(kind="numpy", layout="HW" if arr.ndim == 2 else "HWC", dtype=arr.dtype, scale=scale,
                     gray=gray, batch=1, height=hwc.shape[0], width=hwc.shape[1], alpha=alpha)
    return batch, spec


def _numpy_from_batch(colour: torch.Tensor, spec: ImageSpec) -> np.ndarray:
    hwc = colour[0].permute(1, 2, 0).contiguous().numpy().astype(spec.dtype, copy=False)
    if spec.alpha is not None:
        hwc = np.concatenate([hwc, spec.alpha], axis=2, dtype=spec.dtype)  # keeps byte order
    return hwc[:, :, 0].copy() if spec.layout == "HW" else hwc


# --------------------------------------------------------------------------- PIL / paths


def _pil_to_batch(img: Image.Image) -> tuple[torch.Tensor, ImageSpec]:
    info = dict(img.info)
    if img.mode == "P":
        # A palette cannot hold restored colours: hand back RGB(A).
        transparent = img.has_transparency_data or (img.palette is not None and img.palette.mode == "RGBA")
        pixel_mode = out_mode = "RGBA" if transparent else "RGB"
        info.pop("transparency", None)  # a palette index, meaningless for RGB(A)
    elif img.mode in _PIL_MODES:
        pixel_mode, out_mode = _PIL_MODES[img.mode]
        if img.mode == "PA":
            info.pop("transparency", None)
    else:
        raise ValueError(f"PIL mode {img.mode!r} is not supported; accepted modes: {_PIL_ACCEPTED}")
    pixels = img if img.mode == pixel_mode else img.convert(pixel_mode)
    arr = np.asarray(pixels)
    what = f"PIL image (mode {img.mode})"
    if pixel_mode == "I":
        # 32-bit "I" is what older Pillows gave for 16-bit PNGs: treat it as 16-bit (range checked).
        batch, spec = _numpy_to_batch(arr, what=what, scale=65535.0)
    else:
        batch, spec = _numpy_to_batch(arr, channels=(1, 2, 3, 4), what=what)
    spec = ImageSpec(kind="pil", layout=spec.layout, dtype=spec.dtype, scale=spec.scale, gray=spec.gray,
                     batch=1, height=spec.height, width=spec.width, mode=out_mode, pixel_mode=pixel_mode,
                     alpha=spec.alpha, info=MappingProxyType(info))
    return batch, spec


def _pil_from_batch(colour: torch.Tensor, spec: ImageSpec) -> Image.Image:
    arr = _numpy_from_batch(colour, spec)
    img = Image.frombytes(spec.pixel_mode, (spec.width, spec.height), arr.tobytes())
    if spec.mode != spec.pixel_mode:
        # No dithering: "1" is a plain 50 % threshold, like restoring a scan should be.
        img = img.convert(spec.mode, dither=Image.Dither.NONE)
    img.info.update(spec.info)
    return img


def _path_to_batch(path: str | os.PathLike) -> tuple[torch.Tensor, ImageSpec]:
    with Image.open(path) as f:
        # exif_transpose returns a loaded copy (and drops the orientation tag), so the file can close.
        img = ImageOps.exif_transpose(f)
    return _pil_to_batch(img)


# --------------------------------------------------------------------------- torch


def _torch_to_batch(t: torch.Tensor) -> tuple[torch.Tensor, ImageSpec]:
    if t.dtype not in _TORCH_DTYPES:
        raise TypeError(f"torch dtype {t.dtype} is not supported; use {_TORCH_ACCEPTED}")
    layout = {2: "HW", 3: "CHW", 4: "NCHW"}.get(t.ndim)
    if layout is None:
        raise ValueError(f"torch tensor must be H×W, C×H×W or N×C×H×W; got {t.ndim} dimensions "
                         f"(shape {tuple(t.shape)})")
    _check_shape(tuple(t.shape), "torch tensor")
    nchw = t.detach().reshape((1,) * (4 - t.ndim) + tuple(t.shape))
    c = nchw.shape[1]
    if c not in (1, 3, 4):
        hint = ""
        if t.ndim >= 3 and t.shape[-1] in (1, 3, 4):
            hint = "; it looks channels-last: torch images are C×H×W, use t.permute(2, 0, 1)"
        raise ValueError(f"torch tensor has {c} channels; accepted: 1, 3, 4 (C×H×W){hint}")
    colour_c = 3 if c >= 3 else 1
    alpha = nchw[:, colour_c:].clone() if c > colour_c else None  # stays on the caller's device
    # Copy to the CPU in the compact native dtype, then widen: cheaper than widening on the device.
    planes = nchw[:, :colour_c].to("cpu").to(torch.float32, copy=True)
    planes = _check_values(planes, _TORCH_DTYPES[t.dtype], "torch tensor")
    batch, gray = _split(planes)
    spec = ImageSpec(kind="torch", layout=layout, dtype=t.dtype, scale=_TORCH_DTYPES[t.dtype], gray=gray,
                     batch=nchw.shape[0], height=nchw.shape[2], width=nchw.shape[3], device=t.device,
                     alpha=alpha)
    return batch, spec


def _torch_from_batch(colour: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    out = colour.to(device=spec.device, dtype=spec.dtype)
    if spec.alpha is not None:
        out = torch.cat([out, spec.alpha], dim=1)
    return {"HW": lambda x: x[0, 0], "CHW": lambda x: x[0], "NCHW": lambda x: x}[spec.layout](out)


# --------------------------------------------------------------------------- public


_TO_BATCH: list[tuple[type | tuple[type, ...], Callable[[Any], tuple[torch.Tensor, ImageSpec]]]] = [
    (Image.Image, _pil_to_batch),
    (np.ndarray, _numpy_to_batch),
    (torch.Tensor, _torch_to_batch),
    ((str, os.PathLike), _path_to_batch),
]

_FROM_BATCH: dict[str, Callable[[torch.Tensor, ImageSpec], Any]] = {
    "pil": _pil_from_batch,
    "numpy": _numpy_from_batch,
    "torch": _torch_from_batch,
}


def to_batch(image: ImageInput) -> tuple[torch.Tensor, ImageSpec]:
    """Turn any accepted image into the network's input and a spec to rebuild it.

    Args:
        image: a PIL image, numpy array, torch tensor or path (see the module docs
            for the accepted modes, shapes and dtypes).

    Returns:
        ``(batch, spec)``: ``batch`` is a new float32 CPU tensor ``N×3×H×W`` in
        [0, 1] (``N`` is 1 except for ``N×C×H×W`` tensors; grayscale is repeated
        to three channels, alpha is left out); ``spec`` goes to :func:`from_batch`.

    Raises:
        TypeError: unsupported object type or dtype.
        ValueError: wrong number of dimensions or channels, an empty image, NaN or
            infinite values, float values outside [0, 1], an unsupported PIL mode.
        FileNotFoundError: a path that does not exist.
    """
    for types, convert in _TO_BATCH:
        if isinstance(image, types):
            return convert(image)
    raise TypeError(f"expected {_ACCEPTED}; got {type(image).__module__}.{type(image).__qualname__}")


def from_batch(rgb: torch.Tensor, spec: ImageSpec) -> Image.Image | np.ndarray | torch.Tensor:
    """Rebuild the caller's kind of image from the network's output.

    Args:
        rgb: float tensor ``N×3×H×W`` (any device and float dtype), the same size
            as the batch :func:`to_batch` returned. Values are clamped to [0, 1];
            integer outputs are rounded to nearest.
        spec: the :class:`ImageSpec` :func:`to_batch` returned with that batch.

    Returns:
        An object of the input's type, dtype, mode, shape and device, with the
        input's alpha channel exactly; grayscale comes back as one channel (the
        mean of the three). Paths come back as PIL images.

    Raises:
        TypeError: ``rgb`` is not a tensor or ``spec`` not an ImageSpec.
        ValueError: ``rgb`` has the wrong shape or holds NaN / infinite values.
    """
    if not isinstance(spec, ImageSpec):
        raise TypeError(f"spec must be the ImageSpec returned by to_batch; got {type(spec).__qualname__}")
    if not isinstance(rgb, torch.Tensor) or not rgb.is_floating_point():
        raise TypeError(f"rgb must be a float torch tensor; got {type(rgb).__qualname__}"
                        + (f" of dtype {rgb.dtype}" if isinstance(rgb, torch.Tensor) else ""))
    expected = (spec.batch, 3, spec.height, spec.width)
    if tuple(rgb.shape) != expected:
        raise ValueError(f"rgb must have shape {expected} (N×3×H×W, as to_batch returned); got {tuple(rgb.shape)}")
    # A fresh float32 CPU copy: the caller's tensor is never written to.
    colour = rgb.detach().to("cpu", torch.float32, copy=True)
    if not torch.isfinite(colour).all():
        raise ValueError("rgb contains NaN or infinite values (a numerical failure, e.g. float16 overflow)")
    colour.clamp_(0.0, 1.0)
    if spec.gray:
        colour = colour.mean(dim=1, keepdim=True)
    if spec.scale is not None:
        colour.mul_(spec.scale).round_()
    return _FROM_BATCH[spec.kind](colour, spec)
