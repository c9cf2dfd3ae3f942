"""lir.images: every input kind goes through to_batch/from_batch and comes back as itself."""

from __future__ import annotations

import copy
import io
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from lir.images import ImageSpec, from_batch, to_batch

RNG = np.random.default_rng(0)
H, W = 7, 11  # odd, non-square: catches H/W swaps


def identity(image):
    """to_batch then from_batch with the batch untouched, checking the batch contract on the way."""
    batch, spec = to_batch(image)
    assert isinstance(spec, ImageSpec)
    assert batch.dtype == torch.float32 and batch.device.type == "cpu"
    assert batch.ndim == 4 and batch.shape[1] == 3
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    return from_batch(batch, spec)


def rand_u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def rand_u16(*shape: int) -> np.ndarray:
    a = RNG.integers(0, 65536, size=shape, dtype=np.uint16)
    a.flat[:2] = (0, 65535)  # extremes present
    return a


# --------------------------------------------------------------------------- PIL


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("RGBA", 4), ("L", 1), ("LA", 2)])
def test_pil_8bit_exact(mode: str, channels: int) -> None:
    arr = rand_u8(H, W, channels)
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    out = identity(img)
    assert out.mode == mode and out.size == img.size
    assert np.array_equal(np.asarray(out), np.asarray(img))


def test_pil_alpha_exact_while_colour_changes() -> None:
    img = Image.fromarray(rand_u8(H, W, 4), "RGBA")
    batch, spec = to_batch(img)
    out = from_batch(torch.zeros_like(batch), spec)
    assert np.array_equal(np.asarray(out)[..., 3], np.asarray(img)[..., 3])
    assert not np.asarray(out)[..., :3].any()


def test_pil_gray_is_three_equal_channels_and_mean_back() -> None:
    img = Image.fromarray(rand_u8(H, W), "L")
    batch, spec = to_batch(img)
    assert torch.equal(batch[:, 0], batch[:, 1]) and torch.equal(batch[:, 0], batch[:, 2])
    rgb = torch.stack([torch.full((H, W), v) for v in (0.2, 0.4, 0.6)])[None]
    out = from_batch(rgb, spec)
    assert out.mode == "L" and set(np.unique(np.asarray(out))) == {round(0.4 * 255)}


def test_pil_bilevel() -> None:
    img = Image.fromarray(rand_u8(H, W) > 127)
    assert img.mode == "1"
    out = identity(img)
    assert out.mode == "1" and np.array_equal(np.asarray(out), np.asarray(img))


def test_pil_palette_without_transparency_comes_back_rgb() -> None:
    img = Image.fromarray(rand_u8(H, W, 3), "RGB").quantize(16)
    out = identity(img)
    assert out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(img.convert("RGB")))


def test_pil_palette_with_transparency_comes_back_rgba() -> None:
    img = Image.fromarray(rand_u8(H, W, 3), "RGB").quantize(16)
    img.info["transparency"] = 3
    out = identity(img)
    assert out.mode == "RGBA" and "transparency" not in out.info
    assert np.array_equal(np.asarray(out), np.asarray(img.convert("RGBA")))
    assert (np.asarray(out)[..., 3] == 0).any()


def test_pil_palette_alpha() -> None:
    img = Image.fromarray(rand_u8(H, W, 4), "RGBA").convert("PA")
    out = identity(img)
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out), np.asarray(img.convert("RGBA")))


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr"])
def test_pil_converted_modes_come_back_in_their_mode(mode: str) -> None:
    img = Image.fromarray(rand_u8(H, W, 3), "RGB").convert(mode)
    out = identity(img)
    assert out.mode == mode and out.size == img.size
    # Same colours as Pillow sees them (CMYK round trips exactly through Pillow's naive conversion).
    diff = np.abs(np.asarray(out.convert("RGB"), np.int16) - np.asarray(img.convert("RGB"), np.int16))
    assert diff.max() <= (0 if mode == "CMYK" else 3)


@pytest.mark.parametrize("mode,dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")])
def test_pil_16bit_exact(mode: str, dtype: str) -> None:
    arr = rand_u16(H, W)
    img = Image.frombytes(mode, (W, H), arr.astype(dtype).tobytes())
    out = identity(img)
    assert out.mode == mode
    assert np.array_equal(np.asarray(out).astype(np.uint16), arr)


def test_pil_16bit_keeps_16bit_precision() -> None:
    # Neighbouring 16-bit values must stay distinct (they would merge through uint8).
    arr = np.arange(1000, 1000 + H * W, dtype=np.uint16).reshape(H, W)
    img = Image.frombytes("I;16", (W, H), arr.tobytes())
    batch, spec = to_batch(img)
    assert torch.equal(batch[0, 0] * 65535, torch.from_numpy(arr.astype(np.float32)))
    assert np.array_equal(np.asarray(from_batch(batch, spec)), arr)


def test_pil_mode_I_with_16bit_content() -> None:
    arr = rand_u16(H, W).astype(np.int32)
    img = Image.frombytes("I", (W, H), arr.tobytes())
    out = identity(img)
    assert out.mode == "I" and np.array_equal(np.asarray(out), arr)


def test_pil_mode_I_out_of_16bit_range() -> None:
    img = Image.frombytes("I", (2, 1), np.array([0, 70000], np.int32).tobytes())
    with pytest.raises(ValueError, match="0..65535"):
        to_batch(img)


def test_pil_mode_F() -> None:
    arr = RNG.random((H, W), dtype=np.float32)
    out = identity(Image.frombytes("F", (W, H), arr.tobytes()))
    assert out.mode == "F" and np.abs(np.asarray(out) - arr).max() <= 1e-7


def test_pil_info_kept() -> None:
    img = Image.fromarray(rand_u8(H, W, 3), "RGB")
    exif = Image.Exif()
    exif[0x010F] = "lir-test-camera"
    img.info.update(exif=exif.tobytes(), icc_profile=b"not-really-an-icc-profile", dpi=(300, 300))
    out = identity(img)
    for key in ("exif", "icc_profile", "dpi"):
        assert out.info[key] == img.info[key]
    assert out.getexif()[0x010F] == "lir-test-camera"


def test_pil_unsupported_mode() -> None:
    with pytest.raises(ValueError, match=r"PIL mode 'HSV' is not supported; accepted modes: .*RGB"):
        to_batch(Image.new("HSV", (4, 4)))


def test_pil_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        to_batch(Image.new("RGB", (0, 3)))


# --------------------------------------------------------------------------- paths


def _save_rotated_png(path: pathlib.Path) -> np.ndarray:
    arr = rand_u8(H, W, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(arr).save(path, exif=exif, dpi=(72, 72))
    return arr


@pytest.mark.parametrize("as_str", [True, False])
def test_path_applies_exif_orientation(tmp_path: pathlib.Path, as_str: bool) -> None:
    path = tmp_path / "rotated.png"
    _save_rotated_png(path)
    out = identity(str(path) if as_str else path)
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    with Image.open(path) as f:
        upright = ImageOps.exif_transpose(f)
    assert out.size == (H, W)  # rotated: width and height swapped
    assert np.array_equal(np.asarray(out), np.asarray(upright))
    assert out.getexif().get(0x0112) in (None, 1)  # orientation no longer to be applied
    assert "dpi" in out.info


def test_path_missing(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        to_batch(tmp_path / "nope.png")


def test_path_16bit_png(tmp_path: pathlib.Path) -> None:
    arr = rand_u16(H, W)
    path = tmp_path / "deep.png"
    Image.frombytes("I;16", (W, H), arr.tobytes()).save(path)
    out = identity(path)
    assert np.array_equal(np.asarray(out).astype(np.uint16), arr)


# --------------------------------------------------------------------------- numpy


NUMPY_SHAPES = [(H, W), (H, W, 1), (H, W, 3), (H, W, 4)]


def _rand_numpy(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return rand_u8(*shape)
    if dtype in ("uint16", ">u2"):
        return rand_u16(*shape).astype(dtype)
    a = RNG.random(shape).astype(dtype)
    a.flat[:2] = (0.0, 1.0)
    return a


@pytest.mark.parametrize("shape", NUMPY_SHAPES)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", ">u2", "float16", "float32", "float64"])
def test_numpy_round_trip(shape: tuple[int, ...], dtype: str) -> None:
    arr = _rand_numpy(shape, dtype)
    before = arr.copy()
    out = identity(arr)
    assert np.array_equal(arr, before)  # never modified
    assert isinstance(out, np.ndarray) and out.shape == arr.shape and out.dtype == arr.dtype
    if arr.dtype.kind == "u":
        assert np.array_equal(out, arr)
    else:
        assert np.abs(out.astype(np.float64) - arr.astype(np.float64)).max() <= 1e-7
    if shape[-1:] == (4,):
        assert np.array_equal(out[..., 3], arr[..., 3])  # alpha exact, bit for bit


def test_numpy_alpha_exact_float64() -> None:
    arr = RNG.random((H, W, 4))
    batch, spec = to_batch(arr)
    out = from_batch(torch.rand_like(batch), spec)
    assert np.array_equal(out[..., 3], arr[..., 3])


def test_numpy_rounding_and_clamping() -> None:
    arr = np.zeros((1, 4, 3), np.uint8)
    batch, spec = to_batch(arr)
    batch[0, :, 0, :] = torch.tensor([-0.5, 1.5, 10.4 / 255, 10.6 / 255])
    out = from_batch(batch, spec)
    assert out[0, :, 0].tolist() == [0, 255, 10, 11]


def test_numpy_noncontiguous_and_readonly() -> None:
    base = rand_u8(W, H, 3)
    arr = base.transpose(1, 0, 2)[::-1]  # negative strides, non-contiguous
    arr.flags.writeable = False
    out = identity(arr)
    assert np.array_equal(out, arr) and out.flags.c_contiguous


# --------------------------------------------------------------------------- torch


TORCH_DTYPES = [torch.uint8, torch.uint16, torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _rand_torch(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    if dtype == torch.uint16:
        return torch.randint(0, 65536, shape, generator=g, dtype=torch.int32).to(torch.uint16)
    return torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("shape", [(H, W), (1, H, W), (3, H, W), (4, H, W), (2, 3, H, W), (2, 4, H, W), (2, 1, H, W)])
@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_torch_round_trip(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    t = _rand_torch(shape, dtype)
    before = t.clone()
    batch, spec = to_batch(t)
    assert batch.shape[0] == (shape[0] if len(shape) == 4 else 1)
    out = from_batch(batch, spec)
    assert torch.equal(t, before)
    assert out.shape == t.shape and out.dtype == t.dtype and out.device == t.device
    if dtype.is_floating_point:
        assert (out.double() - t.double()).abs().max() <= 1e-7
    else:
        assert torch.equal(out, t)


def test_torch_alpha_exact_and_on_device_dtype() -> None:
    t = torch.rand(2, 4, H, W, dtype=torch.float64)
    batch, spec = to_batch(t)
    out = from_batch(torch.rand(2, 3, H, W, dtype=torch.bfloat16), spec)  # any float dtype accepted back
    assert out.dtype == torch.float64 and torch.equal(out[:, 3], t[:, 3])


def test_torch_requires_grad_and_batch_independent() -> None:
    t = torch.rand(3, H, W, requires_grad=True)
    batch, spec = to_batch(t)
    assert not batch.requires_grad
    batch.fill_(0.25)  # the batch is ours to modify
    out = from_batch(batch, spec)
    assert not out.requires_grad and torch.all(t != 0.25) and torch.all(out == 0.25)


def test_torch_rgb_not_modified_by_from_batch() -> None:
    batch, spec = to_batch(torch.zeros(3, 2, 2, dtype=torch.uint8))
    rgb = torch.full_like(batch, 2.0)
    from_batch(rgb, spec)
    assert torch.all(rgb == 2.0)


# --------------------------------------------------------------------------- never modified


def _inputs() -> list:
    return [
        Image.fromarray(rand_u8(H, W, 4), "RGBA"),
        Image.fromarray(rand_u8(H, W, 3), "RGB").quantize(8),
        rand_u8(H, W, 4),
        RNG.random((H, W)).astype(np.float32),
        torch.rand(2, 4, H, W),
        torch.rand(H, W),
    ]


@pytest.mark.parametrize("index", range(6))
def test_input_never_modified(index: int) -> None:
    image = _inputs()[index]
    snapshot = copy.deepcopy(image)
    batch, spec = to_batch(image)
    batch.mul_(0.5).add_(0.1)  # write into the batch
    out = from_batch(batch, spec)
    if isinstance(out, (np.ndarray, torch.Tensor)):
        out[...] = 0  # write into the output, including its alpha
    again = from_batch(batch, spec)
    if isinstance(image, Image.Image):
        assert image.mode == snapshot.mode and image.info == snapshot.info
        assert np.array_equal(np.asarray(image), np.asarray(snapshot))
    elif isinstance(image, np.ndarray):
        assert np.array_equal(image, snapshot)
    else:
        assert torch.equal(image, snapshot)
    if spec.has_alpha:  # the spec's alpha did not alias the first output
        alpha = np.asarray(again)[..., 3] if not isinstance(again, torch.Tensor) else again[:, 3]
        ref = np.asarray(image)[..., 3] if not isinstance(image, torch.Tensor) else image[:, 3]
        assert (alpha == ref).all()


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    "bad,match",
    [
        ([[0.0]], "expected a PIL image, a numpy array, a torch tensor or a path"),
        (b"abc", "expected a PIL image"),
        (3.0, "expected a PIL image"),
        (np.zeros((4, 4), np.int64), "numpy dtype int64 is not supported; use uint8, uint16"),
        (np.zeros((4, 4), bool), "numpy dtype bool is not supported"),
        (np.zeros((4, 4), np.complex64), "not supported"),
        (torch.zeros(4, 4, dtype=torch.int32), "torch dtype torch.int32 is not supported; use uint8"),
        (torch.zeros(4, 4, dtype=torch.bool), "torch dtype torch.bool is not supported"),
    ],
)
def test_refused_types(bad, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        to_batch(bad)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((4, 4, 2), np.uint8), "2 channels; accepted: 1, 3, 4"),
        (np.zeros((4, 4, 5), np.uint8), "5 channels"),
        (np.zeros((3, 8, 8), np.uint8), "channels-first.*transpose"),
        (np.zeros(4, np.uint8), "H×W or H×W×C; got 1 dimensions"),
        (np.zeros((1, 4, 4, 3), np.uint8), "got 4 dimensions"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 0), np.float32), "empty"),
        (np.full((2, 2), np.nan), "NaN or infinite"),
        (np.full((2, 2, 3), np.inf, np.float32), "NaN or infinite"),
        (np.full((2, 2, 3), 255.0), r"float images must be in \[0, 1\]; got min 255, max 255 — divide by 255"),
        (np.full((2, 2), -0.5, np.float32), r"must be in \[0, 1\].*min -0.5"),
        (torch.zeros(2, 4, 4), "2 channels"),
        (torch.zeros(1, 5, 4, 4), "5 channels"),
        (torch.zeros(8, 8, 3), "channels-last.*permute"),
        (torch.zeros(4), "got 1 dimensions"),
        (torch.zeros(1, 1, 1, 3, 4), "got 5 dimensions"),
        (torch.zeros(1, 3, 0, 4), "empty"),
        (torch.tensor([[float("nan")]]), "NaN or infinite"),
        (torch.full((3, 2, 2), 2.0, dtype=torch.bfloat16), "divide by 255"),
        (Image.new("RGBX", (2, 2)), "PIL mode 'RGBX' is not supported"),
    ],
)
def test_refused_values(bad, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_batch(bad)


def test_from_batch_refuses() -> None:
    batch, spec = to_batch(rand_u8(H, W, 3))
    with pytest.raises(ValueError, match=r"shape \(1, 3, 7, 11\)"):
        from_batch(batch[:, :, :-1], spec)
    with pytest.raises(ValueError, match="NaN"):
        from_batch(torch.full_like(batch, float("nan")), spec)
    with pytest.raises(TypeError, match="ImageSpec"):
        from_batch(batch, {"kind": "numpy"})
    with pytest.raises(TypeError, match="float torch tensor"):
        from_batch((batch * 255).to(torch.uint8), spec)


def test_spec_is_frozen_and_hashable() -> None:
    _, spec = to_batch(torch.rand(4, H, W))
    with pytest.raises(AttributeError):
        spec.kind = "numpy"  # type: ignore[misc]
    hash(spec)
    assert spec.size == (H, W) and spec.has_alpha and "alpha" not in repr(spec)


def test_pil_lazy_file_object(tmp_path: pathlib.Path) -> None:
    # A PIL image opened from bytes (not yet loaded) works and keeps its format info.
    buf = io.BytesIO()
    Image.fromarray(rand_u8(H, W, 3)).save(buf, "PNG", dpi=(96, 96))
    buf.seek(0)
    with Image.open(buf) as img:
        out = identity(img)
        assert np.array_equal(np.asarray(out), np.asarray(img))
    assert round(out.info["dpi"][0]) == 96
