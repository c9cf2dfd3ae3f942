"""Reading and writing image files for the command line, keeping bit depth, EXIF and ICC profile.

Pillow reads and writes almost everything, but it cannot hold 16-bit colour: it silently turns
48/64-bit PNG and TIFF files into 8-bit RGB. Those files are decoded and encoded here instead, in
numpy, so that ``lir restore photo16.png -o out.png`` stays 16-bit:

* PNG, 16 bits per sample, any colour type, not interlaced (the filter types are undone with a
  vectorised anti-diagonal sweep, since Paeth/Average rows depend on their left neighbour).
* TIFF, 16 bits per sample, RGB(A), strips or tiles, uncompressed / Deflate / LZW / PackBits,
  predictor 1 or 2; written as Deflate with the horizontal predictor.

8-bit images and 16-bit grayscale go through Pillow. The pixels are kept exactly as stored (the
EXIF orientation is not applied), and the EXIF block and ICC profile are written back unchanged, so
viewers show the output the way they showed the input.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, TiffImagePlugin, TiffTags

__all__ = ["ImageFile", "IMAGE_EXTENSIONS", "is_image_path", "read_image", "write_image"]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm", ".pnm", ".tga", ".gif"}
)
"""File name extensions the command treats as images (case-insensitive)."""

# TIFF tags that describe the pixel layout of the source file: never copied to another file.
_STRUCTURE_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325, 338, 339,
     34675}  # 34675 (ICC) travels separately, as icc_profile
)


@dataclasses.dataclass
class ImageFile:
    """An image read from disk: pixels plus what has to survive the round trip.

    Attributes:
        pixels: a PIL image, or for 16-bit colour files a numpy ``uint16`` array H×W×C (C = 3 or 4;
            2 for 16-bit gray+alpha PNG).
        exif: the EXIF block as bytes (what Pillow's ``save(exif=...)`` takes), or None.
        icc_profile: the ICC profile bytes, or None.
        dpi: resolution, when the file records one.
        format: the Pillow format name of the source ("PNG", "JPEG", ...).
    """

    pixels: Union[Image.Image, np.ndarray]
    exif: Optional[bytes] = None
    icc_profile: Optional[bytes] = None
    dpi: Optional[tuple] = None
    format: Optional[str] = None


def is_image_path(path: Union[str, os.PathLike]) -> bool:
    """True when the file name has one of `IMAGE_EXTENSIONS`."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# -- reading ------------------------------------------------------------------------------------


def read_image(path: Union[str, os.PathLike]) -> ImageFile:
    """Read an image file, keeping 16-bit colour, EXIF and the ICC profile.

    Raises:
        OSError: unreadable or not an image (Pillow's `UnidentifiedImageError` is one).
        ValueError: a 16-bit variant this module does not decode (interlaced PNG, float TIFF, ...).
    """
    path = Path(path)
    with Image.open(path) as im:
        fmt = im.format
        icc = im.info.get("icc_profile") or None
        dpi = im.info.get("dpi")
        exif = _exif_bytes(im)
        pixels: Union[Image.Image, np.ndarray, None] = None
        if fmt == "PNG" and _png_is_16bit_colour(path):
            pixels = _read_png16(path.read_bytes())
        elif fmt == "TIFF" and _tiff_is_16bit_colour(im):
            pixels = _read_tiff16(im, path.read_bytes())
        if pixels is None:
            im.load()
            pixels = im.copy()
    return ImageFile(pixels=pixels, exif=exif, icc_profile=icc, dpi=dpi, format=fmt)


def _exif_bytes(im: Image.Image) -> Optional[bytes]:
    raw = im.info.get("exif")
    if isinstance(raw, bytes) and raw:
        return raw  # JPEG/PNG/WebP keep the block verbatim
    if im.format != "TIFF":
        return None
    # In a TIFF, EXIF tags live in the image's own IFD next to the layout tags; keep the others.
    exif = im.getexif()
    for tag in list(exif):
        if tag in _STRUCTURE_TAGS:
            del exif[tag]
    return exif.tobytes() if len(exif) else None


def _png_is_16bit_colour(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(33)
    # Signature (8) + IHDR length/type (8) + width, height (8) + bit depth, colour type.
    return len(head) >= 26 and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 4, 6)


_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _read_png16(data: bytes) -> np.ndarray:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, ctype, _comp, _filt, interlace = header
    if depth != 16 or ctype not in _PNG_CHANNELS:
        raise ValueError(f"not a 16-bit PNG (bit depth {depth}, colour type {ctype})")
    if interlace:
        raise ValueError("interlaced 16-bit PNG files are not supported; save it non-interlaced")
    channels = _PNG_CHANNELS[ctype]
    raw = zlib.decompress(b"".join(idat))
    rows = _png_unfilter(raw, height, width * channels * 2, channels * 2)
    arr = rows.view(">u2").reshape(height, width, channels).astype(np.uint16)
    return arr[:, :, 0] if channels == 1 else arr


def _png_unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo PNG row filters; returns height×stride uint8."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    if buf.size < height * (stride + 1):
        raise ValueError("truncated PNG image data")
    buf = buf[: height * (stride + 1)].reshape(height, stride + 1)
    ftypes = buf[:, 0].astype(np.int64)
    if ftypes.max(initial=0) > 4:
        raise ValueError("corrupt PNG: unknown row filter type")
    width = stride // bpp
    data = buf[:, 1:].reshape(height, width, bpp).astype(np.int32)
    # out has a zero row above and a zero column left of the image: the filters' "outside" values.
    out = np.zeros((height + 1, width + 1, bpp), dtype=np.int32)
    if (ftypes <= 2).all():
        # None/Sub/Up only: each row is vectorised (Sub is a running sum along the row).
        for r in range(height):
            f = ftypes[r]
            if f == 0:
                out[r + 1, 1:] = data[r]
            elif f == 1:
                out[r + 1, 1:] = np.cumsum(data[r], axis=0) & 0xFF
            else:
                out[r + 1, 1:] = (data[r] + out[r, 1:]) & 0xFF
    else:
        # Average and Paeth depend on the reconstructed left, upper and upper-left pixels, so
        # pixels on one anti-diagonal (row + column = s) are independent: sweep s.
        ft = ftypes[:, None]
        for s in range(height + width - 1):
            r = np.arange(max(0, s - width + 1), min(height - 1, s) + 1)
            c = s - r
            a, b, cc = out[r + 1, c], out[r, c + 1], out[r, c]
            f = ft[r]
            p = a + b - cc
            pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - cc)
            paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
            pred = np.where(f == 1, a, np.where(f == 2, b, np.where(f == 3, (a + b) >> 1, np.where(f == 4, paeth, 0))))
            out[r + 1, c + 1] = (data[r, c] + pred) & 0xFF
    return out[1:, 1:].astype(np.uint8).reshape(height, stride)


def _tiff_is_16bit_colour(im: Image.Image) -> bool:
    tags = getattr(im, "tag_v2", {})
    bits = tags.get(258)
    if bits is None:
        return False
    bits = tuple(bits) if isinstance(bits, (tuple, list)) else (bits,)
    spp = int(tags.get(277, 1))
    return spp >= 3 and all(b == 16 for b in bits)


def _packbits_decode(data: bytes) -> bytes:
    out, i, n = bytearray(), 0, len(data)
    while i < n:
        h = data[i]
        i += 1
        if h < 128:
            out += data[i : i + h + 1]
            i += h + 1
        elif h > 128:
            if i < n:
                out += bytes([data[i]]) * (257 - h)
            i += 1
    return bytes(out)


def _lzw_decode(data: bytes) -> bytes:
    """TIFF LZW (MSB-first codes of 9–12 bits, early change)."""
    src = data + b"\0\0\0"
    nbits = len(data) * 8
    out = bytearray()
    table = [bytes([i]) for i in range(256)] + [b"", b""]
    width, pos, prev = 9, 0, b""
    while pos + width <= nbits:
        i = pos >> 3
        word = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2]
        code = (word >> (24 - (pos & 7) - width)) & ((1 << width) - 1)
        pos += width
        if code == 257:
            break
        if code == 256:
            del table[258:]
            width, prev = 9, b""
            continue
        if code < len(table):
            entry = table[code]
            if prev:
                table.append(prev + entry[:1])
        elif prev:
            entry = prev + prev[:1]
            table.append(entry)
        else:
            raise ValueError("corrupt LZW data")
        out += entry
        prev = entry
        if len(table) >= (1 << width) - 1 and width < 12:
            width += 1
    return bytes(out)


def _decompress(chunk: bytes, compression: int) -> bytes:
    if compression == 1:
        return chunk
    if compression in (8, 32946):
        return zlib.decompress(chunk)
    if compression == 5:
        return _lzw_decode(chunk)
    if compression == 32773:
        return _packbits_decode(chunk)
    raise ValueError(f"16-bit TIFF with compression {compression} is not supported (use none, Deflate, LZW or PackBits)")


def _read_tiff16(im: Image.Image, data: bytes) -> np.ndarray:
    tags = im.tag_v2
    order = "<" if data[:2] == b"II" else ">"
    width, height = int(tags[256]), int(tags[257])
    spp = int(tags.get(277, 1))
    compression = int(tags.get(259, 1))
    predictor = int(tags.get(317, 1))
    planar = int(tags.get(284, 1))
    if int(tags.get(339, 1) if not isinstance(tags.get(339), tuple) else tags[339][0]) != 1:
        raise ValueError("only unsigned-integer 16-bit TIFF files are supported")
    if predictor not in (1, 2):
        raise ValueError(f"16-bit TIFF predictor {predictor} is not supported")
    if spp not in (3, 4):
        raise ValueError(f"16-bit TIFF with {spp} samples per pixel is not supported")
    planes = 1 if planar == 1 else spp
    per = spp if planar == 1 else 1  # samples per stored pixel
    dtype = np.dtype(order + "u2")
    out = np.zeros((planes, height, width, per), dtype=np.uint16)

    def decode(chunk_index: int, rows: int, cols: int) -> np.ndarray:
        offset, count = offsets[chunk_index], counts[chunk_index]
        raw = _decompress(data[offset : offset + count], compression)
        need = rows * cols * per * 2
        if len(raw) < need:
            raise ValueError("truncated TIFF image data")
        arr = np.frombuffer(raw[:need], dtype=dtype).reshape(rows, cols, per).astype(np.uint16)
        if predictor == 2:  # horizontal differencing, modulo 2**16
            arr = np.cumsum(arr, axis=1, dtype=np.uint16)
        return arr

    if 322 in tags:  # tiled
        tw, th = int(tags[322]), int(tags[323])
        offsets, counts = list(tags[324]), list(tags[325])
        across, down = -(-width // tw), -(-height // th)
        k = 0
        for p in range(planes):
            for ty in range(down):
                for tx in range(across):
                    tile = decode(k, th, tw)
                    k += 1
                    y, x = ty * th, tx * tw
                    h, w = min(th, height - y), min(tw, width - x)
                    out[p, y : y + h, x : x + w] = tile[:h, :w]
    else:
        offsets, counts = list(tags[273]), list(tags[279])
        rps = int(tags.get(278, height))
        per_plane = -(-height // rps)
        for p in range(planes):
            for s in range(per_plane):
                y = s * rps
                rows = min(rps, height - y)
                out[p, y : y + rows] = decode(p * per_plane + s, rows, width)
    if planar == 1:
        return out[0]
    return np.ascontiguousarray(out[:, :, :, 0].transpose(1, 2, 0))


# -- writing ------------------------------------------------------------------------------------

# Formats that cannot store these modes get the nearest mode they can.
_JPEG_MODES = {"L", "RGB", "CMYK"}


def _format_for(path: Path) -> str:
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"unknown image file extension {ext!r} for {path}")
    return fmt


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def write_image(path: Union[str, os.PathLike], pixels: Union[Image.Image, np.ndarray], *,
                exif: Optional[bytes] = None, icc_profile: Optional[bytes] = None,
                dpi: Optional[tuple] = None) -> None:
    """Write ``pixels`` to ``path`` in the format its extension names, with EXIF and ICC profile.

    16-bit colour arrays are written 16-bit to PNG and TIFF, and reduced to 8 bits for formats
    that have no 16-bit colour. PIL images in modes a format cannot store are converted to the
    nearest one it can (e.g. RGBA → RGB for JPEG, 16-bit gray → 8-bit for JPEG).
    """
    path = Path(path)
    fmt = _format_for(path)
    if isinstance(pixels, np.ndarray):
        if fmt == "PNG":
            path.write_bytes(_encode_png16(pixels, exif=exif, icc_profile=icc_profile, dpi=dpi))
            return
        if fmt == "TIFF" and pixels.ndim == 3 and pixels.shape[2] in (3, 4):
            path.write_bytes(_encode_tiff16(pixels, exif=exif, icc_profile=icc_profile, dpi=dpi))
            return
        arr8 = _to_8bit(pixels)
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[1 if arr8.ndim == 2 else arr8.shape[2]]
        pixels = Image.fromarray(arr8.reshape(arr8.shape[0], arr8.shape[1], -1).squeeze(2) if mode == "L" else arr8, mode)
    img = pixels
    if fmt == "JPEG" and img.mode not in _JPEG_MODES:
        if img.mode.startswith("I;16") or img.mode == "I":
            img = Image.fromarray(_to_8bit(np.asarray(img).astype(np.uint16)), "L")
        else:
            img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
    elif fmt in ("BMP", "GIF", "PPM", "TGA") and (img.mode.startswith("I;16") or img.mode == "I"):
        img = Image.fromarray(_to_8bit(np.asarray(img).astype(np.uint16)), "L")
    kwargs: dict = {}
    if exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        kwargs["exif"] = exif
    if icc_profile and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        kwargs["icc_profile"] = icc_profile
    if dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        kwargs["dpi"] = dpi
    if fmt == "JPEG":
        kwargs.update(quality=95, subsampling=0)  # restoration output: keep detail, not bytes
    elif fmt == "WEBP":
        kwargs.update(quality=95)
    elif fmt == "TIFF":
        kwargs.update(compression="tiff_deflate")
    img.save(path, format=fmt, **kwargs)


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def _encode_png16(arr: np.ndarray, *, exif: Optional[bytes], icc_profile: Optional[bytes],
                  dpi: Optional[tuple]) -> bytes:
    if arr.dtype != np.uint16:
        raise ValueError(f"16-bit PNG needs uint16 pixels, got {arr.dtype}")
    hwc = arr[:, :, None] if arr.ndim == 2 else arr
    height, width, channels = hwc.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = hwc.astype(">u2").view(np.uint8).reshape(height, width, channels * 2).astype(np.int16)
    # Sub filter for every row (difference to the left pixel): photos compress much better.
    diff = rows.copy()
    diff[:, 1:] -= rows[:, :-1]
    filtered = np.concatenate(
        [np.ones((height, 1), np.uint8), (diff & 0xFF).astype(np.uint8).reshape(height, -1)], axis=1
    )
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, ctype, 0, 0, 0))]
    if icc_profile:
        out.append(_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    if dpi:
        ppm = [int(round(d / 0.0254)) for d in dpi[:2]]
        out.append(_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif:
        out.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    out.append(_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def _encode_tiff16(arr: np.ndarray, *, exif: Optional[bytes], icc_profile: Optional[bytes],
                   dpi: Optional[tuple]) -> bytes:
    height, width, channels = arr.shape
    samples = arr.astype("<u2")
    # Horizontal predictor (tag 317 = 2) then Deflate, as Photoshop and libtiff write 16-bit files.
    pred = samples.copy()
    pred[:, 1:] -= samples[:, :-1]
    strip = zlib.compress(pred.tobytes(), 6)
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if exif:
        info = Image.Exif()
        info.load(exif)
        for key in info:
            if key in _STRUCTURE_TAGS:
                continue
            ifd[key] = info.get_ifd(key) if key in TiffTags.TAGS_V2_GROUPS else info.get(key)
            # Types are inferred from the tag registry, as Pillow's own TIFF writer does.
    ifd[256] = width
    ifd[257] = height
    ifd[258] = (16,) * channels
    ifd[259] = 8  # Adobe Deflate
    ifd[262] = 2  # RGB
    ifd[277] = channels
    ifd[278] = height
    ifd[279] = len(strip)
    ifd[284] = 1
    ifd[317] = 2
    if channels == 4:
        ifd[338] = 2  # unassociated alpha
    if icc_profile:
        ifd[34675] = icc_profile
        ifd.tagtype[34675] = TiffTags.UNDEFINED
    if dpi:
        ifd[282], ifd[283], ifd[296] = float(dpi[0]), float(dpi[1]), 2
    # Pillow's writer adds the end of the directory's data to StripOffsets: 0 puts the pixels
    # right after it.
    ifd[273] = 0
    ifd.tagtype[273] = TiffTags.LONG
    ifd.tagtype[279] = TiffTags.LONG
    body = ifd.tobytes(offset=8)
    return b"II*\0" + struct.pack("<I", 8) + body + strip
