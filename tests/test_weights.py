"""load_weights: explicit files and state dicts, bundled defaults, and Hub downloads from a local fake Hub."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from lir.checkpoint import save_checkpoint
from lir.manifest import Manifest, load_manifest
from lir.network import LIR, LIRConfig
from lir.weights import ChecksumError, WeightsNotAvailableError, load_weights

try:
    from .hubserver import HubServer, free_port, local_only_dns
except ImportError:
    from hubserver import HubServer, free_port, local_only_dns

SMALL = LIRConfig(dim=16, left_blk_num=(1, 1), bottom_blk_num=1, right_blk_num=(1, 1))
REPO = "acme/lir-denoise"
FILE = "lir-denoise-small.safetensors"


def make_checkpoint(path: Path, seed: int = 0, config: LIRConfig = SMALL) -> bytes:
    """A small random LIR checkpoint in lir format; returns its bytes."""
    torch.manual_seed(seed)
    save_checkpoint(LIR.from_config(config), path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("ckpt")) / "small.safetensors"


@pytest.fixture(scope="module")
def ckpt_bytes(ckpt: Path) -> bytes:
    return make_checkpoint(ckpt)


def write_manifest(
    directory: Path, content: bytes, *, bundled: bool, hub_revision: str | None, name: str = "lir-denoise-small"
) -> Manifest:
    """A manifest with one default denoiser whose sha256/size describe `content`."""
    directory.mkdir(parents=True, exist_ok=True)
    entry = {
        "task": "denoise",
        "config": SMALL.to_dict(),
        "file": FILE,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "dtype": "float32",
        "bundled": bundled,
        "hub": {"repo_id": REPO, "filename": FILE, "revision": hub_revision} if hub_revision else None,
        "license": "Apache-2.0",
        "training": {"data": "random weights (test)"},
        "metrics": {},
    }
    data = {"schema_version": 1, "defaults": {"denoise": name}, "models": {name: entry}}
    path = directory / "weights_manifest.json"
    path.write_text(json.dumps(data))
    return load_manifest(path)


def tensors_of(content: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(content)


def same_weights(loaded: dict[str, torch.Tensor], content: bytes) -> bool:
    expected = tensors_of(content)
    return set(loaded) == set(expected) and all(torch.equal(loaded[k], expected[k]) for k in expected)


# -- explicit weights ----------------------------------------------------------------------------


def test_explicit_safetensors_path(ckpt: Path, ckpt_bytes: bytes) -> None:
    loaded = load_weights(weights=ckpt)
    assert loaded.name == str(ckpt) and loaded.path == str(ckpt)
    assert loaded.config == SMALL
    assert same_weights(loaded.state_dict, ckpt_bytes)
    model = loaded.network
    assert isinstance(model, LIR) and not model.training
    assert load_weights(weights=str(ckpt)).config == SMALL  # str works as well as Path


def test_config_read_off_keys_without_metadata(tmp_path: Path, ckpt_bytes: bytes) -> None:
    bare = tmp_path / "bare.safetensors"
    save_file(tensors_of(ckpt_bytes), bare)  # no metadata at all
    assert load_weights(weights=bare).config == SMALL


def test_in_memory_state_dict(ckpt_bytes: bytes) -> None:
    loaded = load_weights(weights=tensors_of(ckpt_bytes))
    assert loaded.name == "<state dict>" and loaded.path is None and loaded.config == SMALL
    with pytest.raises(TypeError, match="'x'"):
        load_weights(weights={"x": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="BasicSR"):
        load_weights(weights={"params": tensors_of(ckpt_bytes)})  # type: ignore[dict-item]


def test_unknown_task_lists_valid_ones(ckpt: Path) -> None:
    with pytest.raises(ValueError, match="valid tasks: denoise, deblur, derain, dehaze"):
        load_weights("colorize", weights=ckpt)


def test_task_without_model_and_unknown_model_name(tmp_path: Path, ckpt_bytes: bytes) -> None:
    manifest = write_manifest(tmp_path, ckpt_bytes, bundled=True, hub_revision=None)
    with pytest.raises(ValueError, match=r"no published model for task 'dehaze'.*weights="):
        load_weights("dehaze", manifest=manifest)
    with pytest.raises(ValueError, match="known models: lir-denoise-small"):
        load_weights(weights="lir-nope", manifest=manifest)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_weights(weights=tmp_path / "nope.safetensors")


class _Hostile:
    """Unpickling this creates the marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["evil.pth", "evil.pt", "evil.bin", "evil.ckpt", "evil.safetensors", "evil"])
@pytest.mark.parametrize("container", ["torch.save", "pickle"])
def test_hostile_pickle_runs_nothing(tmp_path: Path, name: str, container: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / name
    payload = {"params": {"Conv_head.conv.weight": _Hostile(marker)}}
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4))
    assert not marker.exists()
    with pytest.raises(ValueError, match="lir convert") as info:
        load_weights(weights=path)
    assert "never unpickles" in str(info.value)
    assert not marker.exists()


def test_truncated_and_corrupted_files(tmp_path: Path, ckpt_bytes: bytes) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(ckpt_bytes[: len(ckpt_bytes) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_weights(weights=cut)
    header_cut = tmp_path / "header.safetensors"
    header_cut.write_bytes(ckpt_bytes[:40])
    with pytest.raises(ValueError, match="truncated"):
        load_weights(weights=header_cut)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(ckpt_bytes[:8] + b"{not json" + ckpt_bytes[17:])
    with pytest.raises(ValueError, match="corrupted safetensors header"):
        load_weights(weights=garbage)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_weights(weights=empty)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, this is not a checkpoint at all")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_weights(weights=text)


def test_checkpoint_of_another_config_names_first_bad_key(tmp_path: Path) -> None:
    bigger = LIRConfig(dim=32, left_blk_num=(1, 1), bottom_blk_num=1, right_blk_num=(1, 1))
    torch.manual_seed(0)
    sd = LIR.from_config(bigger).state_dict()
    lying = tmp_path / "lying.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, lying, metadata={"config": json.dumps(SMALL.to_dict())})
    with pytest.raises(ValueError, match=r"key 'Conv_head.conv.weight' has shape \(32, 3, 3, 3\)") as info:
        load_weights(weights=lying)
    assert "another configuration" in str(info.value) and "'dim': 32" in str(info.value)

    torch.manual_seed(0)
    small = dict(LIR.from_config(SMALL).state_dict())
    dropped = list(small)[-1]
    del small[dropped]
    with pytest.raises(ValueError, match=re.escape(f"missing key {dropped!r}")):
        load_weights(weights=small)
    small[dropped] = torch.zeros(1)
    small["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected key 'extra.weight'"):
        load_weights(weights=small)
    with pytest.raises(ValueError, match="not an LIR checkpoint"):
        load_weights(weights={"fc.weight": torch.zeros(2, 2)})


# -- bundled defaults ----------------------------------------------------------------------------


def test_bundled_default_needs_no_network(tmp_path: Path, ckpt_bytes: bytes) -> None:
    manifest = write_manifest(tmp_path, ckpt_bytes, bundled=True, hub_revision=None)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / FILE).write_bytes(ckpt_bytes)
    with local_only_dns():
        loaded = load_weights("denoise", manifest=manifest)
        by_name = load_weights("denoise", weights="lir-denoise-small", manifest=manifest)
    assert loaded.name == by_name.name == "lir-denoise-small"
    assert loaded.entry is not None and loaded.entry.license == "Apache-2.0"
    assert loaded.path == str(tmp_path / "weights" / FILE)
    assert same_weights(loaded.state_dict, ckpt_bytes)


def test_bundled_file_with_wrong_checksum_is_refused(tmp_path: Path, ckpt_bytes: bytes) -> None:
    manifest = write_manifest(tmp_path, ckpt_bytes, bundled=True, hub_revision=None)
    (tmp_path / "weights").mkdir()
    bad = bytearray(ckpt_bytes)
    bad[-1] ^= 0xFF
    (tmp_path / "weights" / FILE).write_bytes(bytes(bad))
    expected, actual = hashlib.sha256(ckpt_bytes).hexdigest(), hashlib.sha256(bad).hexdigest()
    with pytest.raises(ChecksumError) as info:
        load_weights("denoise", manifest=manifest)
    message = str(info.value)
    assert FILE in message and expected in message and actual in message


# -- the Hub (a real HTTP server on 127.0.0.1) ---------------------------------------------------


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A fake Hub with huggingface_hub pointed at it and an isolated cache; no other host reachable."""
    from huggingface_hub import constants

    server = HubServer().start()
    cache = tmp_path / "hf-cache"
    # huggingface_hub copies these environment variables into `constants` at import: patch both.
    for env, attr, value in [
        ("HF_ENDPOINT", "ENDPOINT", server.url),
        ("HF_HUB_CACHE", "HF_HUB_CACHE", str(cache)),
    ]:
        monkeypatch.setenv(env, value)
        monkeypatch.setattr(constants, attr, value)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # plain HTTP, like a file without Xet
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)  # no registry fetch in the request log
    with local_only_dns():
        yield server
    server.stop()


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def cache_files(hub_cache: Path) -> list[str]:
    return sorted(str(p.relative_to(hub_cache)) for p in hub_cache.rglob("*") if p.is_file() or p.is_symlink())


def test_first_download_then_cached_reuse_offline(
    hub: HubServer, tmp_path: Path, ckpt_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = hub.add_commit(REPO, {FILE: ckpt_bytes})
    manifest = write_manifest(tmp_path / "m", ckpt_bytes, bundled=False, hub_revision=commit)

    loaded = load_weights("denoise", manifest=manifest)
    assert same_weights(loaded.state_dict, ckpt_bytes)
    assert loaded.path is not None and loaded.path.startswith(str(tmp_path / "hf-cache"))
    assert hub.count("HEAD", f"/{REPO}/resolve/{commit}/{FILE}") == 1
    assert hub.count("GET", "cdn:/blobs/") == 1
    blob = Path(os.path.realpath(loaded.path))
    assert blob.parent.name == "blobs" and blob.name == hashlib.sha256(ckpt_bytes).hexdigest()

    # Online again: the pinned commit is cached, so not a single request is made.
    before = len(hub.requests)
    load_weights("denoise", manifest=manifest)
    assert len(hub.requests) == before

    # Offline (HF_HUB_OFFLINE=1) with the server gone: still loads from the cache.
    hub.stop()
    go_offline(monkeypatch)
    again = load_weights("denoise", manifest=manifest)
    assert again.path == loaded.path and same_weights(again.state_dict, ckpt_bytes)


def test_offline_and_not_cached_says_how_to_fix(
    hub: HubServer, tmp_path: Path, ckpt_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = hub.add_commit(REPO, {FILE: ckpt_bytes})
    manifest = write_manifest(tmp_path / "m", ckpt_bytes, bundled=False, hub_revision=commit)
    with pytest.raises(WeightsNotAvailableError, match=r"local_files_only=True.*weights="):
        load_weights("denoise", manifest=manifest, local_files_only=True)
    go_offline(monkeypatch)
    with pytest.raises(WeightsNotAvailableError) as info:
        load_weights("denoise", manifest=manifest)
    message = str(info.value)
    assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE=0" in message and "weights=" in message
    assert hub.requests == []


def test_revision_pinning(hub: HubServer, tmp_path: Path, ckpt_bytes: bytes) -> None:
    newer = make_checkpoint(tmp_path / "newer.safetensors", seed=1)
    old_commit = hub.add_commit(REPO, {FILE: ckpt_bytes})
    new_commit = hub.add_commit(REPO, {FILE: newer})  # "main" now points here
    assert old_commit != new_commit

    pinned_old = write_manifest(tmp_path / "old", ckpt_bytes, bundled=False, hub_revision=old_commit)
    loaded = load_weights("denoise", manifest=pinned_old)
    assert same_weights(loaded.state_dict, ckpt_bytes) and not same_weights(loaded.state_dict, newer)
    assert f"/snapshots/{old_commit}/" in (loaded.path or "")
    assert hub.count(contains=new_commit) == 0 and hub.count(contains="/resolve/main/") == 0

    pinned_new = write_manifest(tmp_path / "new", newer, bundled=False, hub_revision=new_commit)
    assert same_weights(load_weights("denoise", manifest=pinned_new).state_dict, newer)
    # Back to the old pin: served from the cache, still the old content.
    assert same_weights(load_weights("denoise", manifest=pinned_old).state_dict, ckpt_bytes)


def test_checksum_mismatch_is_reported_and_not_reused(hub: HubServer, tmp_path: Path, ckpt_bytes: bytes) -> None:
    commit = hub.add_commit(REPO, {FILE: ckpt_bytes})
    manifest = write_manifest(tmp_path / "m", ckpt_bytes, bundled=False, hub_revision=commit)
    hub.corrupt(REPO, commit, FILE)  # a bad transfer: same size and advertised hash, wrong bytes
    expected = hashlib.sha256(ckpt_bytes).hexdigest()
    actual = hashlib.sha256(bytes(b ^ 0xFF for b in ckpt_bytes)).hexdigest()

    with pytest.raises(ChecksumError) as info:
        load_weights("denoise", manifest=manifest)
    message = str(info.value)
    assert FILE in message and expected in message and actual in message
    cache = tmp_path / "hf-cache"
    assert not (cache / "models--acme--lir-denoise" / "snapshots" / commit / FILE).exists()
    assert not any((cache / "models--acme--lir-denoise" / "blobs").iterdir())

    # The bad copy is gone: the next call downloads again (and now gets good bytes).
    hub.corrupt(REPO, commit, FILE, on=False)
    loaded = load_weights("denoise", manifest=manifest)
    assert same_weights(loaded.state_dict, ckpt_bytes)
    assert hub.count("GET", "cdn:/blobs/") == 2


def test_server_down(hub: HubServer, tmp_path: Path, ckpt_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.file_download as hf_download
    import huggingface_hub.utils._http as hf_http
    from huggingface_hub import constants

    # huggingface_hub backs off 1+2+4+8+8 s before giving up; the test need not wait for real.
    no_sleep = types.SimpleNamespace(sleep=lambda seconds: None, time=time.time, monotonic=time.monotonic)
    monkeypatch.setattr(hf_http, "time", no_sleep)
    monkeypatch.setattr(hf_download, "time", no_sleep)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    manifest = write_manifest(tmp_path / "m", ckpt_bytes, bundled=False, hub_revision="a" * 40)
    with pytest.raises(WeightsNotAvailableError) as info:
        load_weights("denoise", manifest=manifest)
    message = str(info.value)
    assert "could not download model 'lir-denoise-small'" in message and dead in message
    assert "Check your connection" in message and "weights=" in message


def test_unknown_repo_revision_or_file_on_the_hub(hub: HubServer, tmp_path: Path, ckpt_bytes: bytes) -> None:
    commit = hub.add_commit("acme/other", {"x.safetensors": b"x"})
    manifest = write_manifest(tmp_path / "m", ckpt_bytes, bundled=False, hub_revision=commit)
    with pytest.raises(WeightsNotAvailableError, match="RepositoryNotFoundError"):
        load_weights("denoise", manifest=manifest)
    without_file = hub.add_commit(REPO, {"other.safetensors": b"x"})
    with pytest.raises(WeightsNotAvailableError, match="RevisionNotFoundError"):
        load_weights("denoise", manifest=manifest)
    manifest = write_manifest(tmp_path / "m2", ckpt_bytes, bundled=False, hub_revision=without_file)
    with pytest.raises(WeightsNotAvailableError, match="EntryNotFoundError"):
        load_weights("denoise", manifest=manifest)


def test_bundled_entry_missing_from_package_falls_back_to_hub(
    hub: HubServer, tmp_path: Path, ckpt_bytes: bytes
) -> None:
    commit = hub.add_commit(REPO, {FILE: ckpt_bytes})
    manifest = write_manifest(tmp_path / "m", ckpt_bytes, bundled=True, hub_revision=commit)  # no weights/ dir
    assert same_weights(load_weights("denoise", manifest=manifest).state_dict, ckpt_bytes)
    assert hub.count("GET", "cdn:/blobs/") == 1


def test_concurrent_loads_download_once(hub: HubServer, tmp_path: Path, ckpt_bytes: bytes) -> None:
    hub.download_delay = 1.0  # keep the first download in flight while the others arrive
    commit = hub.add_commit(REPO, {FILE: ckpt_bytes})
    manifest = write_manifest(tmp_path / "m", ckpt_bytes, bundled=False, hub_revision=commit)
    n = 4
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = load_weights("denoise", manifest=manifest)
        except BaseException as err:  # reported below, with the others
            results[i] = err

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert hub.count("HEAD", "/resolve/") >= 2  # the calls really overlapped (none found it cached)
    assert hub.count("GET", "cdn:/blobs/") == 1
    assert all(same_weights(r.state_dict, ckpt_bytes) for r in results)
    files = cache_files(tmp_path / "hf-cache" / "models--acme--lir-denoise")
    # One blob, one snapshot link, no partial downloads left behind.
    assert files == [f"blobs/{hashlib.sha256(ckpt_bytes).hexdigest()}", f"snapshots/{commit}/{FILE}"]
