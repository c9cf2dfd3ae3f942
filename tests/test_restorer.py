"""Tests of lir.restorer and lir.devices: end-to-end restores on a small random network (no network access)."""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lir import devices, restorer as restorer_mod, tiling
from lir.network import LIR
from random_weights import SMALL, random_network
from lir.restorer import Restorer, load_model, restore



pytestmark = pytest.mark.usefixtures("torch_threads")  # one thread (conftest)


def _small_network(seed: int = 0) -> LIR:
    return random_network(seed, **SMALL)


@pytest.fixture(scope="module")
def model(weights) -> Restorer:
    return load_model(weights=weights, device="cpu")


def _rgb(h: int = 70, w: int = 90, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


# -- input kinds ----------------------------------------------------------------------------------

def _inputs():
    rgb = _rgb()
    return {
        "pil-rgb": Image.fromarray(rgb),
        "pil-rgba": Image.fromarray(np.concatenate([rgb, rgb[:, :, :1]], axis=2), "RGBA"),
        "pil-L": Image.fromarray(rgb[:, :, 0]),
        "pil-I;16": Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257),
        "numpy-uint8-hwc": rgb,
        "numpy-uint16-hw": rgb[:, :, 1].astype(np.uint16) * 257,
        "numpy-float32-hwc": rgb.astype(np.float32) / 255,
        "torch-float-chw": torch.from_numpy(rgb).permute(2, 0, 1).float() / 255,
        "torch-uint8-nchw": torch.from_numpy(np.stack([rgb, rgb[::-1].copy()])).permute(0, 3, 1, 2).contiguous(),
        "torch-float64-hw": torch.from_numpy(rgb[:, :, 2]).double() / 255,
    }


def _describe(obj):
    if isinstance(obj, Image.Image):
        return ("pil", obj.mode, obj.size)
    if isinstance(obj, np.ndarray):
        return ("numpy", obj.dtype, obj.shape)
    return ("torch", obj.dtype, tuple(obj.shape), obj.device)


def _copy(obj):
    return obj.copy() if not isinstance(obj, torch.Tensor) else obj.clone()


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("kind", list(_inputs()))
@pytest.mark.parametrize("tile", [None, 128])
def test_every_input_kind_comes_back_as_itself(model, kind, tile):
    image = _inputs()[kind]
    before = _copy(image)
    out = model(image, tile=tile, tile_overlap=16, progress=False)
    assert _describe(out) == _describe(image)
    assert _equal(image, before), "the caller's input was modified"
    if isinstance(out, torch.Tensor):
        assert torch.isfinite(out.float()).all()


def test_path_input_gives_a_pil_image(model, tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(_rgb()).save(path)
    out = model(str(path), tile=None, progress=False)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (90, 70)


def test_whole_image_result_is_pad_network_crop(model):
    """tile=None is exactly: to_batch → reflect pad to /32 → network → crop → from_batch."""
    x = torch.rand(1, 3, 70, 90)
    out = model(x, tile=None, progress=False)
    padded, size = tiling.pad_to_valid(x)
    with torch.inference_mode():
        expected = tiling.crop(model.network(padded), size).clamp(0, 1)
    assert torch.equal(out, expected)


def test_tiled_and_auto(model, monkeypatch):
    x = torch.rand(1, 3, 200, 260)
    whole = model(x, tile=None, progress=False)
    tiled = model(x, tile=128, tile_overlap=32, progress=False)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    # "auto" with a large budget runs the whole image; with a tiny one it tiles.
    monkeypatch.setattr(restorer_mod, "memory_budget", lambda device: 1 << 40)
    assert torch.equal(model(x, progress=False), whole)
    seen = []
    forward = model._forward
    monkeypatch.setattr(model, "_forward", lambda t: seen.append(tuple(t.shape)) or forward(t))
    budget = devices.activation_bytes(128, 160, dim=16, dtype=torch.float32)
    monkeypatch.setattr(restorer_mod, "memory_budget", lambda device: budget)
    out = model(x, progress=False)
    assert out.shape == whole.shape
    assert seen and all(s[2] <= 160 and s[3] <= 160 and s[2] % 32 == 0 and s[3] % 32 == 0 for s in seen)


def test_single_tile_equals_whole_image(model):
    x = torch.rand(1, 3, 100, 120)  # padded to 128×128: a 128 tile is the whole image
    assert torch.equal(model(x, tile=128, progress=False), model(x, tile=None, progress=False))


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tile", [100, 0, 64, "big", 129.0, True])
def test_bad_tile(model, tile):
    with pytest.raises((ValueError, TypeError)):
        model(_rgb(), tile=tile)


@pytest.mark.parametrize("overlap", [-1, 64, 1.5])
def test_bad_overlap_names_tile_overlap(model, overlap):
    with pytest.raises((ValueError, TypeError), match=r"^tile_overlap must be"):
        model(_rgb(), tile=128, tile_overlap=overlap)


def test_unknown_task_lists_valid_tasks(weights):
    with pytest.raises(ValueError, match="denoise.*deblur.*derain.*dehaze"):
        restore(_rgb(), task="sharpen", weights=weights, device="cpu")
    with pytest.raises(ValueError, match="denoise"):
        load_model("sharpen", weights=weights)


def test_bad_tile_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(restorer_mod, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(ValueError):
        restore(_rgb(), tile=100)


def test_task_without_model_says_so():
    from lir.manifest import load_manifest

    unpublished = [task for task, name in load_manifest().defaults.items() if name is None]
    if not unpublished:
        pytest.skip("every task has a published model")
    with pytest.raises(ValueError, match=f"task '{unpublished[0]}'.*weights="):
        load_model(unpublished[0], device="cpu")


@pytest.mark.parametrize("image", [np.zeros((10, 10, 5), np.uint8), np.full((8, 8, 3), 2.0, np.float32), "nope.png", 3])
def test_bad_images(model, image):
    with pytest.raises((ValueError, TypeError, OSError)):
        model(image, tile=None)


def test_missing_weights():
    with pytest.raises(FileNotFoundError):
        load_model(weights="/nonexistent/x.safetensors", device="cpu")


# -- devices --------------------------------------------------------------------------------------

def test_pick_device_and_dtype():
    assert devices.pick_device("cpu") == torch.device("cpu")
    assert devices.pick_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available() and not devices._mps_available():
        assert devices.pick_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        devices.pick_device("tpu0")
    with pytest.raises(ValueError):
        devices.pick_device(3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            devices.pick_device("cuda")
    assert devices.pick_dtype("cpu") == torch.float32
    assert devices.pick_dtype("cpu", "bf16") == torch.bfloat16
    assert devices.pick_dtype("cpu", torch.float64) == torch.float64
    with pytest.raises(ValueError, match="not supported on cpu"):
        devices.pick_dtype("cpu", torch.float16)
    with pytest.raises(ValueError, match="unknown dtype"):
        devices.pick_dtype("cpu", "int8")


def test_memory_model():
    assert 0 < devices.memory_budget("cpu") <= devices.CPU_BUDGET_CAP
    assert devices.available_ram() > 0
    small = devices.activation_bytes(256, 256, dim=16, dtype=torch.float32)
    big = devices.activation_bytes(512, 512, dim=48, dtype=torch.float32)
    half = devices.activation_bytes(512, 512, dim=48, dtype=torch.bfloat16)
    assert small < half < big
    # The default model on a 4000×3000 photo does not fit the CPU budget: auto must tile.
    assert devices.activation_bytes(3008, 4000, dim=48, dtype=torch.float32) > devices.CPU_BUDGET_CAP


def test_restorer_holds_network_ready_for_inference(model):
    assert not model.network.training
    assert not any(p.requires_grad for p in model.network.parameters())
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert "random.safetensors" in repr(model)


# -- OOM back-off, half-precision fallback ---------------------------------------------------------

class _OOMAbove(torch.nn.Module):
    """Wraps a network; raises CUDA out-of-memory for inputs with more than `limit` pixels."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit, self.sizes = net, limit, []
        self.config = net.config

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        if x.shape[-2] * x.shape[-1] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.net(x)


def test_out_of_memory_halves_the_tile():
    r = Restorer(_small_network(), device="cpu")
    r.network = _OOMAbove(r.network, limit=128 * 128)
    x = torch.rand(1, 3, 256, 256)
    with pytest.warns(RuntimeWarning, match="256-pixel tiles; retrying with 128-pixel"):
        out = r(x, tile=None, progress=False)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert r.network.sizes[0] == (256, 256) and set(r.network.sizes[1:]) == {(128, 128)}
    # Same result as asking for 128-pixel tiles directly.
    r2 = Restorer(_small_network(), device="cpu")
    assert torch.equal(out, r2(x, tile=128, progress=False))


def test_out_of_memory_gives_up_at_the_minimum_tile():
    r = Restorer(_small_network(), device="cpu")
    r.network = _OOMAbove(r.network, limit=0)
    with pytest.warns(RuntimeWarning), pytest.raises(torch.cuda.OutOfMemoryError):
        r(torch.rand(1, 3, 256, 256), tile=256, progress=False)


class _NaNOut(torch.nn.Module):
    """Wraps a network; its output is all NaN (as a float16 overflow would give)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.config = net, net.config

    def forward(self, x):
        return torch.full_like(self.net(x), float("nan"))


def test_nonfinite_half_output_is_redone_in_float32():
    r = Restorer(_small_network(), device="cpu", dtype=torch.bfloat16)
    assert r.network.Conv_head.conv.weight.dtype == torch.bfloat16
    r.network = _NaNOut(r.network)
    x = torch.rand(1, 3, 128, 128)
    with pytest.warns(RuntimeWarning, match="NaN or infinity"):
        out = r(x, tile=None, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per restorer
        out2 = r(x, tile=None, progress=False)
    expected = Restorer(_small_network(), device="cpu")(x, tile=None, progress=False)
    assert torch.equal(out, expected) and torch.equal(out2, expected)


# -- threads, cache, progress ---------------------------------------------------------------------

def test_two_threads_give_the_sequential_results(model):
    images = [torch.rand(1, 3, 140, 150, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    sequential = [model(im, tile=128, progress=False) for im in images]
    results: list = [None, None]
    errors: list = []
    barrier = threading.Barrier(2)

    def work(i):
        try:
            barrier.wait()
            results[i] = model(images[i], tile=128, progress=False)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(torch.equal(a, b) for a, b in zip(results, sequential))


def test_restore_caches_the_model(weights, monkeypatch, tmp_path):
    restorer_mod.clear_cache()
    calls = []
    real = restorer_mod.load_model
    monkeypatch.setattr(restorer_mod, "load_model", lambda *a, **k: calls.append(k) or real(*a, **k))
    image = _rgb(40, 50)
    first = restore(image, weights=weights, device="cpu", tile=None)
    second = restore(image, weights=weights, device="cpu", tile=None)
    assert len(calls) == 1 and np.array_equal(first, second)
    # Two threads asking at once still load once.
    restorer_mod.clear_cache()
    calls.clear()
    threads = [threading.Thread(target=restore, args=(image,), kwargs=dict(weights=weights, device="cpu", tile=None))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    # A changed file is a different model: reloaded.
    st = os.stat(weights)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    restore(image, weights=weights, device="cpu", tile=None)
    assert len(calls) == 2
    # In-memory state dicts are never cached.
    sd = _small_network().state_dict()
    restore(image, weights=sd, device="cpu", tile=None)
    restore(image, weights=sd, device="cpu", tile=None)
    assert len(calls) == 4
    restorer_mod.clear_cache()


def test_progress_options(model, capsys):
    x = torch.rand(1, 3, 256, 256)
    calls = []
    model(x, tile=128, tile_overlap=0, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)
    model(x, tile=128, tile_overlap=0, progress=True)
    assert "0/4" in capsys.readouterr().err  # tqdm redraws at intervals: the first frame is certain
    model(x, tile=128, tile_overlap=0, progress=None)  # stderr is not a terminal here: no bar
    model(x, tile=128, tile_overlap=0, progress=False)
    assert capsys.readouterr().err == ""


def test_gpu_plan_batches_tiles(monkeypatch):
    """On an accelerator several tiles share a batch, sized by the memory budget (planning only)."""
    r = Restorer(_small_network(), device="cpu")
    per_tile = devices.activation_bytes(128, 128, dim=16, dtype=torch.float32)
    monkeypatch.setattr(restorer_mod, "memory_budget", lambda device: 5 * per_tile)
    r.device = torch.device("cuda", 0)  # only _plan is called: no CUDA needed
    assert r._plan(512, 512, 1, 128, 32) == (128, 5)
    assert r._plan(128, 128, 1, 128, 32) == (128, 1)  # one tile: batch of one
    r.device = torch.device("cpu")
    assert r._plan(512, 512, 1, 128, 32) == (128, 1)  # the CPU does not batch tiles


def test_cache_identity_of_manifest_models(monkeypatch, weights):
    from types import SimpleNamespace

    entry = SimpleNamespace(name="lir-denoise-test", sha256="ab" * 32)

    def default_model(task):
        if task != "denoise":
            raise ValueError(f"no published model for task {task!r} yet")
        return entry

    fake = SimpleNamespace(check_task=lambda task: None, default_model=default_model,
                           models={"lir-denoise-test": entry})
    monkeypatch.setattr("lir.manifest.load_manifest", lambda: fake)
    assert restorer_mod._model_identity("denoise", None) == ("model", "lir-denoise-test", "ab" * 32)
    assert restorer_mod._model_identity("denoise", "lir-denoise-test") == ("model", "lir-denoise-test", "ab" * 32)
    kind, path, _mtime, size = restorer_mod._model_identity("denoise", weights)
    assert kind == "file" and path == os.path.realpath(weights) and size == os.path.getsize(weights)
    assert restorer_mod._model_identity("denoise", "/nonexistent.safetensors") is None
    with pytest.raises(ValueError, match="no published model"):
        restorer_mod._model_identity("dehaze", None)
