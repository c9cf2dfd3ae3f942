"""Tests of lir.ray_data: RestoreBatch called directly, and on a real local Ray cluster (no network access)."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from PIL import Image

import lir
from lir.ray_data import RestoreBatch, as_image

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("torch_threads")  # one thread (conftest)


@pytest.fixture(scope="module")
def restore_batch(weights) -> RestoreBatch:
    return RestoreBatch(weights=weights, device="cpu", threads=1)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    # Functions defined here travel by value: the workers cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _expected(image, weights):
    return lir.restore(image, weights=weights, device="cpu", dtype=torch.float32)


def _column(values) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        column[i] = v
    return column


# -- called directly ---------------------------------------------------------------------------


def test_same_sized_batch_comes_back_stacked_and_equal(restore_batch, weights):
    stack = np.stack([_rgb(40, 50, 0), _rgb(40, 50, 1), _rgb(40, 50, 2)])
    out = restore_batch({"image": stack, "id": np.arange(3)})
    assert out["image"].shape == stack.shape and out["image"].dtype == np.uint8
    assert list(out["error"]) == ["", "", ""] and list(out["id"]) == [0, 1, 2]
    for i in range(3):
        assert np.array_equal(out["image"][i], _expected(stack[i], weights))


def test_mixed_rows_keep_shape_and_dtype(restore_batch, weights):
    rng = np.random.default_rng(3)
    rows = [
        _rgb(33, 61, 4),
        (rng.random((30, 20, 4))).astype(np.float32),  # RGBA float
        (rng.random((25, 26)) * 65535).astype(np.uint16),
        (rng.random((25, 26)) * 65535).astype(">u2"),  # big-endian 16-bit, grouped with the next one
        (rng.random((25, 26)) * 65535).astype(">u2"),
        (rng.random((28, 31, 2)) * 255).astype(np.uint8),  # gray + alpha
    ]
    out = restore_batch({"image": _column(rows)})
    assert list(out["error"]) == [""] * len(rows)
    for row, got in zip(rows, out["image"]):
        assert got.shape == row.shape and got.dtype == row.dtype
    for row, got in zip(rows[:5], out["image"]):
        assert np.array_equal(got, _expected(row, weights))
    la = np.asarray(_expected(Image.fromarray(rows[5], "LA"), weights))
    assert np.array_equal(out["image"][5], la)
    assert np.array_equal(out["image"][5][:, :, 1], rows[5][:, :, 1])  # alpha untouched


def test_gray_row_stored_as_1xhxw_is_restored_as_gray(restore_batch, weights):
    gray = (np.random.default_rng(5).random((30, 40)) * 255).astype(np.uint8)
    out = restore_batch({"image": _column([gray[None], _rgb(30, 40, 6)])})
    assert out["image"][0].shape == (1, 30, 40)
    assert np.array_equal(as_image(out["image"][0]), _expected(gray, weights))


def test_bad_rows_fail_alone_with_a_message(restore_batch, weights):
    good = _rgb(20, 30, 7)
    rows = [good, np.full((20, 30, 3), 2.0, np.float32), np.zeros((20, 30, 5), np.uint8),
            np.zeros((20, 30), bool), "not an image", b"not an image file either", good.copy()]
    paths = np.array([f"f{i}.png" for i in range(len(rows))], dtype=object)
    out = restore_batch({"image": _column(rows), "path": paths})
    errors = list(out["error"])
    assert errors[0] == "" and errors[6] == ""
    assert np.array_equal(out["image"][0], _expected(good, weights))
    assert np.array_equal(out["image"][6], out["image"][0])
    assert errors[1].startswith("f1.png: ValueError: float images must be in [0, 1]")
    assert errors[2].startswith("f2.png: ValueError: numpy array has 5 channels")
    assert errors[3].startswith("f3.png: TypeError: numpy dtype bool is not supported")
    assert errors[4] == "f4.png: TypeError: expected an image array or the bytes of an image file; got str"
    assert errors[5].startswith("f5.png: UnidentifiedImageError: not an image file Pillow can read (24 bytes")
    for i in (1, 2, 3):  # empty placeholders of the row's own kind keep Ray's column a tensor column
        empty = out["image"][i]
        assert empty.size == 0 and empty.ndim == rows[i].ndim and empty.dtype == rows[i].dtype
    assert out["image"][4].size == 0 and out["image"][4].dtype == np.uint8


def test_file_bytes_are_decoded_in_their_mode(weights):
    files = []
    for img in (Image.fromarray(_rgb(30, 40, 8)), Image.fromarray(_rgb(30, 40, 9)[:, :, 0]),
                Image.fromarray(_rgb(30, 40, 10)).convert("P")):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        files.append(buf.getvalue())
    restore_files = RestoreBatch(weights=weights, device="cpu", column="bytes", threads=1)
    out = restore_files({"bytes": _column(files), "path": np.array(["a", "b", "c"], dtype=object)})
    assert list(out["error"]) == ["", "", ""] and "bytes" in out
    images = list(out["image"])
    assert [i.shape for i in images] == [(30, 40, 3), (30, 40, 1), (30, 40, 3)]  # gray as H×W×1, palette as RGB
    for data, got in zip(files, images):
        expected = np.asarray(_expected(Image.open(io.BytesIO(data)), weights))
        assert np.array_equal(as_image(got), expected)


def test_mode_converts_decoded_files(weights):
    buf = io.BytesIO()
    Image.fromarray(_rgb(20, 20, 11)[:, :, 0]).save(buf, format="PNG")
    out = RestoreBatch(weights=weights, device="cpu", column="bytes", mode="RGB", threads=1)(
        {"bytes": _column([buf.getvalue(), b"junk"])})
    assert out["image"][0].shape == (20, 20, 3)
    assert out["image"][1].size == 0 and out["error"][1].startswith("UnidentifiedImageError")


def test_errors_in_the_call_and_the_constructor(restore_batch, weights):
    with pytest.raises(ValueError, match=r"no column 'image'; its columns are \['bytes', 'path'\]"):
        restore_batch({"bytes": np.array([b""], dtype=object), "path": np.array(["x"], dtype=object)})
    with pytest.raises(TypeError, match="batch_format"):
        restore_batch([np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match="multiple of 32"):
        RestoreBatch(weights=weights, tile=100)
    with pytest.raises(ValueError, match="must differ"):
        RestoreBatch(weights=weights, output_column="x", error_column="x")
    with pytest.raises(ValueError, match="not a PIL mode"):
        RestoreBatch(weights=weights, mode="RGBX2")
    with pytest.raises(ValueError, match="PIL mode 'HSV' is not supported"):
        RestoreBatch(weights=weights, mode="HSV")
    with pytest.raises(ValueError, match="threads must be a positive int"):
        RestoreBatch(weights=weights, threads=0)


def test_explicit_threads_are_set(weights):
    before = torch.get_num_threads()
    try:
        RestoreBatch(weights=weights, device="cpu", threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_as_image():
    a = np.zeros((1, 30, 40), np.uint8)
    assert as_image(a).shape == (30, 40)
    assert as_image(np.zeros((30, 40, 1))).shape == (30, 40)
    assert as_image(np.zeros((1, 40, 3))).shape == (1, 40, 3)  # a 1-pixel-high colour image stays
    assert as_image(np.zeros((5, 4))).shape == (5, 4)


# -- on a local Ray cluster -----------------------------------------------------------------------


def _save_folder(folder: Path) -> None:
    folder.mkdir()
    Image.fromarray(_rgb(40, 50, 20)).save(folder / "a.png")
    Image.fromarray(_rgb(40, 50, 21)).save(folder / "b.png")  # same size as a: restored together
    Image.fromarray(_rgb(33, 61, 22)).save(folder / "c.png")
    Image.fromarray(np.dstack([_rgb(30, 20, 23), _rgb(30, 20, 24)[:, :, :1]]), "RGBA").save(folder / "d.png")
    Image.fromarray(_rgb(30, 30, 25)[:, :, 1]).save(folder / "e.png")  # grayscale


def _read_images_rows(ds) -> dict[str, np.ndarray]:
    return {Path(r["path"]).name: r for r in ds.take_all()}


def test_read_images_on_ray_equals_sequential_restore(cluster, weights, tmp_path):
    _save_folder(tmp_path / "in")
    source = ray.data.read_images(str(tmp_path / "in"), include_paths=True)
    inputs = _read_images_rows(source)
    restored = source.map_batches(RestoreBatch, fn_constructor_kwargs={"weights": weights, "device": "cpu"},
                                  compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_size=3)
    outputs = _read_images_rows(restored)
    assert sorted(outputs) == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    for name, row in outputs.items():
        given = inputs[name]["image"]
        assert row["error"] == "", row["error"]
        # Ray hands the grayscale e.png to the batch as 1×H×W (it shares a batch with colour images),
        # where reading it alone gives H×W: compare the images' own shapes.
        assert as_image(row["image"]).shape == as_image(given).shape and row["image"].dtype == given.dtype, name
        assert np.array_equal(as_image(row["image"]), _expected(as_image(given), weights)), name


def test_unreadable_file_fails_only_its_row(cluster, weights, tmp_path):
    folder = tmp_path / "in"
    _save_folder(folder)
    (folder / "truncated.png").write_bytes((folder / "a.png").read_bytes()[:60])
    (folder / "notes.png").write_bytes(b"just some text, not a picture")
    ds = ray.data.read_binary_files(str(folder), include_paths=True)
    ds = ds.map_batches(RestoreBatch, fn_constructor_kwargs={"weights": weights, "device": "cpu", "column": "bytes"},
                        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, batch_size=2)
    rows = {Path(r["path"]).name: r for r in ds.take_all()}
    assert len(rows) == 7
    for name in ("truncated.png", "notes.png"):
        assert rows[name]["error"].startswith(f"{folder / name}: "), rows[name]["error"]
        assert rows[name]["image"].size == 0
    assert "OSError" in rows["truncated.png"]["error"]
    assert "not an image file Pillow can read" in rows["notes.png"]["error"]
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        assert rows[name]["error"] == ""
        expected = np.asarray(_expected(Image.open(folder / name), weights))
        assert np.array_equal(as_image(rows[name]["image"]), expected), name
    good = ds.filter(lambda row: not row["error"])
    assert good.count() == 5


def _threads_seen(cpus: int, weights: str) -> int:
    torch.set_num_threads(5)  # whatever the worker started with, RestoreBatch must set it
    RestoreBatch(weights=weights, device="cpu")
    return torch.get_num_threads()


def test_actor_threads_follow_its_cpus(cluster, weights):
    seen = [ray.get(ray.remote(num_cpus=n)(_threads_seen).remote(n, weights)) for n in (1, 2)]
    assert seen == [1, 2]


def test_example_writes_the_same_file_names(cluster, weights, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    _save_folder(folder)
    (folder / "sub").mkdir()
    (folder / "a.png").rename(folder / "sub" / "a.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    spec = importlib.util.spec_from_file_location("ray_folder_example", ROOT / "examples" / "ray_folder.py")
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)
    spec.loader.exec_module(example)
    ray.cloudpickle.register_pickle_by_value(example)  # its write_batch runs in Ray workers
    try:
        code = example.main([str(folder), str(tmp_path / "out"), "--weights", weights, "--batch-size", "2"])
    finally:
        ray.cloudpickle.unregister_pickle_by_value(example)
    out = capsys.readouterr().out
    assert code == 1  # one file failed
    assert "failed: " in out and "broken.png" in out and "5 restored, 1 failed" in out and "images/s" in out
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["b.png", "c.png", "d.png", "e.png", "sub/a.png"]
    for name in written:
        source = Image.open(folder / name)
        result = Image.open(tmp_path / "out" / name)
        assert result.mode == source.mode and result.size == source.size
        assert np.array_equal(np.asarray(result), np.asarray(_expected(source, weights))), name
