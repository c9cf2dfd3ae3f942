"""Tests of the `lir` command (lir.cli) and of the file I/O it uses (lir.fileio); no network access."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lir import fileio
from lir.cli import main
from random_weights import SMALL, random_network

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("torch_threads")  # one thread (conftest)


def _rgb(h=48, w=64, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "LIR test camera"  # Make
    exif[0x0112] = 6  # Orientation: kept, and the pixels are not rotated
    return exif.tobytes()


ICC = b"\0\0\2\0fake-icc-profile" * 8


# -- files and folders -------------------------------------------------------------------------

def test_one_file_to_one_file(tmp_path, weights, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(_rgb()).save(src)
    code, _, err = _run(capsys, "restore", src, "-o", tmp_path / "out.jpg", "--weights", weights, "--tile", "none")
    assert code == 0, err
    out = Image.open(tmp_path / "out.jpg")
    assert out.format == "JPEG" and out.size == (64, 48) and out.mode == "RGB"
    assert "in.png ->" in err


def test_folder_keeps_names_and_subfolders(tmp_path, weights, capsys):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_rgb()).save(src / "a.png")
    Image.fromarray(_rgb(seed=1)[:, :, 0]).save(src / "sub" / "b.jpg")
    (src / "notes.txt").write_text("not an image")
    single = tmp_path / "c.webp"
    Image.fromarray(_rgb(seed=2)).save(single)
    code, _, err = _run(capsys, "restore", src, single, "-o", tmp_path / "out", "--weights", weights, "-q")
    assert code == 0 and err == ""
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "a.png", "c.webp", "sub/b.jpg"]
    assert Image.open(tmp_path / "out" / "sub" / "b.jpg").mode == "L"


def test_output_inside_input_folder_is_not_read_back(tmp_path, weights, capsys):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    code, _, err = _run(capsys, "restore", tmp_path, "-o", tmp_path / "restored", "--weights", weights, "-q")
    assert code == 0, err
    code, _, err = _run(capsys, "restore", tmp_path, "-o", tmp_path / "restored", "--weights", weights, "-q")
    assert code == 0, err
    assert not (tmp_path / "restored" / "restored").exists()


def test_failing_file_is_reported_and_the_rest_continue(tmp_path, weights, capsys):
    Image.fromarray(_rgb()).save(tmp_path / "good1.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(_rgb(seed=3)).save(tmp_path / "good2.png")
    code, _, err = _run(capsys, "restore", tmp_path / "good1.png", tmp_path / "broken.png", tmp_path / "missing.png",
                        tmp_path / "good2.png", "-o", tmp_path / "out", "--weights", weights, "-q")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "broken.png" in lines[1] and "missing.png" in lines[0]
    assert (tmp_path / "out" / "good1.png").is_file() and (tmp_path / "out" / "good2.png").is_file()
    assert not (tmp_path / "out" / "broken.png").exists()


def test_refuses_to_overwrite_the_input(tmp_path, weights, capsys):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    code, _, err = _run(capsys, "restore", tmp_path / "a.png", "-o", tmp_path / "a.png", "--weights", weights)
    assert code == 1 and "overwrite" in err and (tmp_path / "a.png").read_bytes() == before


# -- bit depth and metadata --------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_stays_16bit_with_metadata(tmp_path, weights, capsys, ext, channels):
    rng = np.random.default_rng(0)
    arr = (rng.random((40, 56, channels)) * 65535).astype(np.uint16)
    src = tmp_path / f"in{ext}"
    fileio.write_image(src, arr, exif=_exif(), icc_profile=ICC)
    code, _, err = _run(capsys, "restore", src, "-o", tmp_path / f"out{ext}", "--weights", weights, "-q")
    assert code == 0, err
    back = fileio.read_image(tmp_path / f"out{ext}")
    assert isinstance(back.pixels, np.ndarray) and back.pixels.dtype == np.uint16
    assert back.pixels.shape == arr.shape
    assert np.array_equal(back.pixels[:, :, 3:], arr[:, :, 3:])  # alpha untouched
    assert back.icc_profile == ICC
    exif = Image.open(tmp_path / f"out{ext}").getexif()
    assert exif.get(0x010F) == "LIR test camera" and exif.get(0x0112) == 6
    # Values use the full 16-bit range, not 8-bit values scaled up.
    assert (back.pixels[:, :, :3] % 257 != 0).any()


def test_16bit_gray_png(tmp_path, weights, capsys):
    arr = (np.random.default_rng(1).random((40, 50)) * 65535).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "g.png")
    code, _, err = _run(capsys, "restore", tmp_path / "g.png", "-o", tmp_path / "o.png", "--weights", weights, "-q")
    assert code == 0, err
    out = Image.open(tmp_path / "o.png")
    assert out.mode in ("I;16", "I") and np.asarray(out).max() > 255


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_exif_and_icc_kept_8bit(tmp_path, weights, capsys, ext):
    src = tmp_path / f"in{ext}"
    Image.fromarray(_rgb()).save(src, exif=_exif(), icc_profile=ICC)
    code, _, err = _run(capsys, "restore", src, "-o", tmp_path / "out", "--weights", weights, "-q")
    assert code == 0, err
    out = Image.open(tmp_path / "out" / src.name)
    assert out.info.get("icc_profile") == ICC
    assert out.getexif().get(0x010F) == "LIR test camera"
    assert out.size == (64, 48)  # orientation tag kept, pixels not rotated


def test_fileio_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    for shape in [(33, 47, 3), (33, 47, 4), (33, 47), (33, 47, 2)]:
        arr = (rng.random(shape) * 65535).astype(np.uint16)
        fileio.write_image(tmp_path / "x.png", arr)
        assert np.array_equal(fileio.read_image(tmp_path / "x.png").pixels if len(shape) != 2 else
                              np.asarray(Image.open(tmp_path / "x.png")).astype(np.uint16), arr)
    arr = (rng.random((33, 47, 3)) * 65535).astype(np.uint16)
    fileio.write_image(tmp_path / "x.tiff", arr, dpi=(300, 300))
    assert np.array_equal(fileio.read_image(tmp_path / "x.tiff").pixels, arr)


def test_png_paeth_and_average_filters_decode():
    rng = np.random.default_rng(3)
    rows = (rng.random((6, 5 * 6)) * 256).astype(np.uint8)
    bpp, encoded, prev = 6, [], np.zeros(rows.shape[1], np.int32)
    for r, f in enumerate([4, 3, 1, 2, 0, 4]):
        cur = rows[r].astype(np.int32)
        enc = []
        for i in range(len(cur)):
            a = cur[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            p = a + b - c
            paeth = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else (b if abs(p - b) <= abs(p - c) else c)
            enc.append((cur[i] - [0, a, b, (a + b) // 2, paeth][f]) & 0xFF)
        encoded.append(bytes([f]) + bytes(enc))
        prev = cur
    assert np.array_equal(fileio._png_unfilter(b"".join(encoded), 6, 30, bpp), rows)


@pytest.mark.parametrize("compression", ["tiff_lzw", "packbits", "tiff_adobe_deflate"])
def test_tiff_decoders(tmp_path, compression):
    img = Image.fromarray((np.random.default_rng(4).random((40, 60, 3)) * 40).astype(np.uint8))
    img.save(tmp_path / "t.tif", compression=compression)
    im = Image.open(tmp_path / "t.tif")
    data = (tmp_path / "t.tif").read_bytes()
    chunks = [fileio._decompress(data[o:o + c], int(im.tag_v2[259])) for o, c in zip(im.tag_v2[273], im.tag_v2[279])]
    assert b"".join(chunks) == np.asarray(img).tobytes()


# -- usage errors, models, convert -------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["restore", "x.png"],  # no -o
    ["restore", "x.png", "-o", "y.png", "--tile", "100"],
    ["restore", "x.png", "-o", "y.png", "--tile", "big"],
    ["restore", "x.png", "-o", "y.png", "--task", "sharpen"],
    ["restore", "x.png", "-o", "y.png", "--device", "tpu"],
    ["restore", "x.png", "-o", "y.png", "--dtype", "float16", "--device", "cpu"],
    ["restore", "x.png", "-o", "y.png", "--overlap", "-3"],
    ["frobnicate"],
    [],
])
def test_usage_errors_exit_2(argv, capsys):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "usage:" in err


@pytest.mark.parametrize("option,value", [("--overlap", "-3"), ("--tile", "100")])
def test_tiling_usage_errors_name_the_option(option, value, capsys):
    code, _, err = _run(capsys, "restore", "x.png", "-o", "y.png", option, value)
    assert code == 2 and f"error: {option} must be" in err


def test_missing_input_exits_1(tmp_path, capsys):
    code, _, err = _run(capsys, "restore", tmp_path / "nope.png", "-o", tmp_path / "o.png")
    assert code == 1 and "nope.png" in err


def test_unloadable_weights_exit_1(tmp_path, capsys):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    code, _, err = _run(capsys, "restore", tmp_path / "a.png", "-o", tmp_path / "o.png", "--weights", tmp_path / "no.safetensors")
    assert code == 1 and "cannot load the model" in err


def test_models_lists_tasks(capsys):
    code, out, _ = _run(capsys, "models")
    assert code == 0
    assert all(task in out for task in ("denoise", "deblur", "derain", "dehaze"))


def test_convert_authors_checkpoint(tmp_path, capsys):
    sd = random_network(**SMALL).state_dict()
    torch.save({"params": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "authors.pth")
    code, out, err = _run(capsys, "convert", tmp_path / "authors.pth", tmp_path / "mine.safetensors",
                          "--params-key", "params", "--task", "denoise")
    assert code == 0, err
    name, _, body = out.partition(":")
    entry = json.loads(body)
    assert json.loads(name) == "mine" and entry["task"] == "denoise" and entry["config"]["dim"] == 16
    code, _, err = _run(capsys, "convert", tmp_path / "authors.pth", tmp_path / "x.safetensors", "--params-key", "params_ema")
    assert code == 1 and "params_ema" in err


def test_python_dash_m(tmp_path, weights):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, "-m", "lir", "restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"),
                           "--weights", weights, "--tile", "none", "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "b.png").size == (64, 48)


def test_models_table(monkeypatch, capsys):
    from types import SimpleNamespace

    from lir.network import LIRConfig

    info = SimpleNamespace(name="lir-denoise-s", task="denoise", is_default=True, bundled=True, cached=False,
                           config=LIRConfig(), metrics={"CBSD68 sigma=25 PSNR (dB)": 30.1})
    monkeypatch.setattr("lir.manifest.list_models", lambda: [info])
    monkeypatch.setattr("lir.manifest.load_manifest",
                        lambda: SimpleNamespace(defaults={"denoise": "lir-denoise-s"}))
    code, out, _ = _run(capsys, "models")
    assert code == 0
    header, row = out.splitlines()[:2]
    assert header.split()[:4] == ["name", "task", "default", "weights"]
    assert "lir-denoise-s" in row and "bundled" in row and "dim 48, blocks 3,3/3/4,3" in row and "30.1" in row
    assert "denoise (lir-denoise-s)" in out and "deblur (no model yet" in out
