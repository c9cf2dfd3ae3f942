"""The weights manifest: packaged file, schema validation, defaults, and list_models()."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lir.manifest import (
    MANIFEST_PATH,
    TASKS,
    ManifestError,
    format_entry,
    list_models,
    load_manifest,
    parse_manifest,
)

try:
    from .hubserver import local_only_dns
except ImportError:
    from hubserver import local_only_dns

SHA = "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def entry(**overrides: Any) -> dict[str, Any]:
    """A complete, valid manifest entry."""
    base = {
        "task": "denoise",
        "description": "small test model",
        "config": {"img_channel": 3, "dim": 16, "left_blk_num": [1, 1], "bottom_blk_num": 1, "right_blk_num": [1, 1]},
        "file": "lir-denoise-test.safetensors",
        "size": 1234,
        "sha256": SHA,
        "dtype": "float32",
        "bundled": True,
        "hub": {"repo_id": "acme/lir-denoise", "filename": "lir-denoise-test.safetensors", "revision": COMMIT},
        "license": "Apache-2.0",
        "training": {"data": "BSDS432", "steps": 100, "hardware": "2 CPU threads", "wall_time": "1 h",
                     "started_from": None},  # fmt: skip
        "metrics": {"CBSD68 sigma=25 PSNR (dB)": 29.5},
    }
    base.update(overrides)
    return base


def manifest_data(models: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    models = {"lir-denoise-test": entry()} if models is None else models
    return {"schema_version": 1, "defaults": {"denoise": "lir-denoise-test"} if defaults is None else defaults,
            "models": models}  # fmt: skip


def write_manifest(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "weights_manifest.json"
    path.write_text(json.dumps(data))
    return path


def test_packaged_manifest_is_valid_and_shared_with_the_repo_root() -> None:
    manifest = load_manifest()
    assert manifest.path == MANIFEST_PATH
    assert set(manifest.defaults) == set(TASKS)
    for task, name in manifest.defaults.items():
        if name is not None:
            assert manifest.models[name].task == task
    root = Path(__file__).resolve().parents[1] / "weights_manifest.json"
    if root.exists() or root.is_symlink():  # a source checkout: one file, two names
        assert root.is_symlink() and root.resolve() == MANIFEST_PATH


def test_load_manifest_is_cached() -> None:
    assert load_manifest() is load_manifest()


def test_a_full_entry_round_trips(tmp_path: Path) -> None:
    manifest = load_manifest(write_manifest(tmp_path, manifest_data()))
    model = manifest.models["lir-denoise-test"]
    assert model.name == "lir-denoise-test" and model.config.dim == 16
    assert model.hub is not None and model.hub.revision == COMMIT
    assert model.to_dict() == entry()
    assert manifest.default_model("denoise") is model
    assert manifest.bundled_dir == tmp_path / "weights"
    text = format_entry("lir-denoise-test", model.to_dict())
    assert json.loads("{" + text + "}") == {"lir-denoise-test": entry()}


def _bad(where: str, mutate: Any) -> Any:
    return pytest.param(mutate, where, id=where)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        _bad("models['lir-denoise-test'].sha256", lambda e: e.update(sha256="abc")),
        _bad("models['lir-denoise-test'].hub.revision", lambda e: e["hub"].update(revision="main")),
        _bad("models['lir-denoise-test'].hub.repo_id", lambda e: e["hub"].update(repo_id="no-slash")),
        _bad("models['lir-denoise-test'].colour", lambda e: e.update(colour="red")),
        _bad("models['lir-denoise-test'].license", lambda e: e.pop("license")),
        _bad("models['lir-denoise-test'].task", lambda e: e.update(task="superres")),
        _bad("models['lir-denoise-test'].config", lambda e: e["config"].update(dim=17)),
        _bad("models['lir-denoise-test'].file", lambda e: e.update(file="../evil.safetensors")),
        _bad("models['lir-denoise-test'].file", lambda e: e.update(file="model.pth")),
        _bad("models['lir-denoise-test'].size", lambda e: e.update(size="big")),
        _bad("models['lir-denoise-test'].dtype", lambda e: e.update(dtype="int8")),
        _bad("models['lir-denoise-test'].bundled", lambda e: e.update(bundled="yes")),
        _bad("models['lir-denoise-test'].training.steps", lambda e: e["training"].update(steps=-1)),
        _bad("models['lir-denoise-test'].training.data", lambda e: e["training"].update(data=None)),
        _bad("models['lir-denoise-test'].metrics", lambda e: e.update(metrics=[1, 2])),
        _bad("models['lir-denoise-test']: neither bundled", lambda e: e.update(bundled=False, hub=None)),
    ],
)
def test_malformed_entry_names_entry_and_field(tmp_path: Path, mutate: Any, where: str) -> None:
    data = manifest_data()
    mutate(data["models"]["lir-denoise-test"])
    with pytest.raises(ManifestError) as info:
        load_manifest(write_manifest(tmp_path, data))
    assert where in str(info.value)
    assert "weights_manifest.json" in str(info.value)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (manifest_data(defaults={"denoise": "missing"}), "defaults['denoise']"),
        (manifest_data(defaults={"deblur": "lir-denoise-test"}), "defaults['deblur']"),
        (manifest_data(defaults={"colorize": None}), "defaults['colorize']"),
        ({**manifest_data(), "schema_version": 2}, "schema_version"),
        ({**manifest_data(), "extra": 1}, "top level.extra"),
        (manifest_data(models={"Bad Name": entry()}, defaults={}), "models['Bad Name']"),
        (manifest_data(models={"a": entry(), "b": entry()}, defaults={}), "models['b'].file"),
    ],
)
def test_malformed_manifest_names_the_field(tmp_path: Path, data: dict[str, Any], where: str) -> None:
    with pytest.raises(ManifestError, match=None) as info:
        parse_manifest(copy.deepcopy(data), path=tmp_path / "weights_manifest.json")
    assert where in str(info.value)


def test_invalid_json_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "weights_manifest.json"
    path.write_text('{"schema_version": 1,')
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(path)


def test_unknown_task_and_unpublished_task_and_unknown_model(tmp_path: Path) -> None:
    manifest = load_manifest(write_manifest(tmp_path, manifest_data()))
    with pytest.raises(ValueError, match="valid tasks: denoise, deblur, derain, dehaze"):
        manifest.default_model("superres")
    with pytest.raises(ValueError, match=r"no published model for task 'deblur'.*weights="):
        manifest.default_model("deblur")
    with pytest.raises(ValueError, match="known models: lir-denoise-test"):
        manifest.get("lir-nope")


def test_list_models_reports_bundled_and_cached_without_network(tmp_path: Path, monkeypatch: Any) -> None:
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    models = {
        "lir-denoise-test": entry(),
        "lir-derain-hub": entry(task="derain", file="derain.safetensors", bundled=False,
                                hub={"repo_id": "acme/derain", "filename": "derain.safetensors", "revision": COMMIT}),
        "lir-dehaze-hub": entry(task="dehaze", file="dehaze.safetensors", bundled=False,
                                hub={"repo_id": "acme/dehaze", "filename": "dehaze.safetensors", "revision": COMMIT}),
    }  # fmt: skip
    manifest = load_manifest(write_manifest(tmp_path, manifest_data(models, {"denoise": "lir-denoise-test"})))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "lir-denoise-test.safetensors").write_bytes(b"x")
    # The Hugging Face cache layout: snapshots/<commit>/<file> (normally a link into blobs/).
    snapshot = cache / "models--acme--derain" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "derain.safetensors").write_bytes(b"x")

    with local_only_dns():
        infos = {info.name: info for info in list_models(manifest)}
    assert [i.task for i in infos.values()] == ["denoise", "derain", "dehaze"]
    assert infos["lir-denoise-test"].bundled and infos["lir-denoise-test"].is_default
    assert not infos["lir-denoise-test"].cached
    assert infos["lir-derain-hub"].cached and not infos["lir-derain-hub"].bundled
    assert not infos["lir-derain-hub"].is_default
    assert not infos["lir-dehaze-hub"].cached and not infos["lir-dehaze-hub"].bundled
    assert infos["lir-denoise-test"].config.dim == 16
    assert infos["lir-denoise-test"].metrics == {"CBSD68 sigma=25 PSNR (dB)": 29.5}


def test_importing_lir_loads_no_hub_client() -> None:
    """Nothing touches the network at import: huggingface_hub is not even imported until a Hub model is used."""
    import subprocess
    import sys

    code = (
        "import sys, lir, lir.manifest, lir.weights, lir.checkpoint; "
        "print('huggingface_hub' in sys.modules, 'httpx2' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "False"]
