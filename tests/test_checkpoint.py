"""save_checkpoint, convert_checkpoint (authors' BasicSR pickles) and the publish tool."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lir.checkpoint import convert_checkpoint, save_checkpoint
from lir.manifest import format_entry, parse_manifest
from lir.network import LIR, LIRConfig
from lir.weights import load_weights, sha256_file

try:
    from .hubserver import HubServer, local_only_dns
except ImportError:
    from hubserver import HubServer, local_only_dns

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lir_parity_small_cpu_layout.safetensors"
SMALL = LIRConfig(dim=16, left_blk_num=(1, 1), bottom_blk_num=1, right_blk_num=(1, 1))


def metadata_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


@pytest.fixture(scope="module")
def parity() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE)


@pytest.fixture(scope="module")
def authors_weights(parity: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fixture's weights in the authors' CPU layout (fixed kernels included)."""
    return {k.removeprefix("weights."): v for k, v in parity.items() if k.startswith("weights.")}


def test_save_checkpoint_writes_lir_format(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LIR.from_config(SMALL)
    path = tmp_path / "out" / "m.safetensors"
    sha = save_checkpoint(model, path, metadata={"steps": 12, "note": "hi"})
    assert sha == sha256_file(path)
    meta = metadata_of(path)
    assert meta["format"] == "lir" and json.loads(meta["config"]) == SMALL.to_dict()
    assert meta["steps"] == "12" and meta["note"] == "hi"
    assert not list(path.parent.glob(".*.tmp"))  # the temporary file was renamed away
    loaded = load_weights(weights=path)
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in model.state_dict().items())

    half = tmp_path / "half.safetensors"
    save_checkpoint(model.state_dict(), half, SMALL.to_dict(), dtype="float16")
    assert {t.dtype for t in load_file(half).values()} == {torch.float16}
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(model, tmp_path / "x.safetensors", metadata={"config": "{}"})
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_checkpoint(model, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="Conv_head.conv.weight"):
        save_checkpoint(model, tmp_path / "x.safetensors", LIRConfig(dim=32, left_blk_num=(1, 1), bottom_blk_num=1,
                                                                     right_blk_num=(1, 1)))  # fmt: skip


def test_convert_basicsr_checkpoint_reproduces_the_fixture(
    tmp_path: Path, parity: dict[str, torch.Tensor], authors_weights: dict[str, torch.Tensor]
) -> None:
    src = tmp_path / "net_g_latest.pth"
    torch.save({"params": {"module." + k: v for k, v in authors_weights.items()}}, src)
    dst = tmp_path / "lir-parity.safetensors"

    entry = convert_checkpoint(src, dst)

    meta = metadata_of(dst)
    assert meta["format"] == "lir" and meta["source_sha256"] == sha256_file(src) and meta["params_key"] == "params"
    assert json.loads(meta["config"]) == SMALL.to_dict()
    assert entry["sha256"] == sha256_file(dst) and entry["size"] == dst.stat().st_size
    assert entry["file"] == dst.name and entry["config"] == SMALL.to_dict() and entry["dtype"] == "float32"
    assert entry["converted_from"] == {"file": src.name, "sha256": sha256_file(src), "params_key": "params"}
    assert entry["hub"] is None and entry["bundled"] is True  # bundled-only until tools/publish.py runs
    stored = load_file(dst)
    assert not any(k.endswith(("Sobel_x", "Laplation")) or k.startswith("module.") for k in stored)

    loaded = load_weights(weights=dst)
    model = loaded.network
    with torch.no_grad():
        out = model(parity["input"])
    assert out.dtype == torch.float32
    assert (out.double() - parity["output_fp64"]).abs().max().item() < 1e-4


def test_convert_entry_validates_once_filled_in(tmp_path: Path, authors_weights: dict[str, torch.Tensor]) -> None:
    src = tmp_path / "a.pth"
    torch.save({"params": authors_weights}, src)
    entry = convert_checkpoint(src, tmp_path / "lir-x.safetensors", task="denoise")
    with pytest.raises(ValueError, match=r"models\['lir-x'\].license"):
        parse_manifest({"schema_version": 1, "defaults": {}, "models": {"lir-x": entry}})
    entry["license"] = "unspecified"
    entry["training"]["data"] = "authors' release"
    manifest = parse_manifest({"schema_version": 1, "defaults": {"denoise": "lir-x"}, "models": {"lir-x": entry}})
    assert manifest.default_model("denoise").sha256 == entry["sha256"]
    assert format_entry("lir-x", entry).startswith('"lir-x": {')


def test_params_ema_preferred_and_params_key_chooses(
    tmp_path: Path, authors_weights: dict[str, torch.Tensor]
) -> None:
    ema = {k: v + 1 if v.is_floating_point() and not k.endswith(("Sobel_x", "Sobel_xy", "Sobel_yx", "Laplation",
           "Edge", "Roberts_x", "Roberts_y")) else v for k, v in authors_weights.items()}  # fmt: skip
    src = tmp_path / "both.pth"
    torch.save({"params": authors_weights, "params_ema": ema, "iter": 5}, src)

    convert_checkpoint(src, tmp_path / "ema.safetensors")
    key = "Conv_head.conv.weight"
    assert torch.equal(load_file(tmp_path / "ema.safetensors")[key], ema[key])
    assert metadata_of(tmp_path / "ema.safetensors")["params_key"] == "params_ema"

    convert_checkpoint(src, tmp_path / "raw.safetensors", params_key="params")
    assert torch.equal(load_file(tmp_path / "raw.safetensors")[key], authors_weights[key])
    with pytest.raises(ValueError, match=r"no state dict under 'net_g'.*params"):
        convert_checkpoint(src, tmp_path / "x.safetensors", params_key="net_g")


def test_convert_refuses_what_is_not_an_lir_checkpoint(tmp_path: Path) -> None:
    src = tmp_path / "other.pth"
    torch.save({"params": {"module.fc.weight": torch.zeros(2, 2)}}, src)
    with pytest.raises(ValueError, match="not an LIR checkpoint"):
        convert_checkpoint(src, tmp_path / "x.safetensors")
    odd = tmp_path / "odd.pth"
    torch.save({"optimizer": 1}, odd)
    with pytest.raises(ValueError, match="params_key"):
        convert_checkpoint(odd, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_convert_never_runs_a_hostile_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pth"
    torch.save({"params": {"Conv_head.conv.weight": _Hostile(marker)}}, src)
    with pytest.raises(ValueError, match="weights-only"):
        convert_checkpoint(src, tmp_path / "x.safetensors")
    assert not marker.exists()


# -- tools/publish.py ----------------------------------------------------------------------------


def publish_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lir_publish_tool", ROOT / "tools" / "publish.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def publish_args(ckpt: Path) -> list[str]:
    return [str(ckpt), "--repo-id", "acme/lir-denoise-s", "--name", "lir-denoise-s", "--task", "denoise",
            "--license", "apache-2.0", "--training-data", "BSDS432 crops", "--steps", "10"]  # fmt: skip


def test_publish_dry_run_prints_plan_and_entry(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "lir-denoise-s.safetensors"
    save_checkpoint(LIR.from_config(SMALL), ckpt)
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "publish.py"), *publish_args(ckpt), "--dry-run"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "would create (if missing) the model repo acme/lir-denoise-s" in run.stdout
    assert sha256_file(ckpt) in run.stdout and "README.md" in run.stdout and "license: apache-2.0" in run.stdout
    text = run.stdout.split("commit hash of the upload):\n", 1)[1]
    entry = json.loads("{" + text + "}")["lir-denoise-s"]
    assert entry["hub"] == {"repo_id": "acme/lir-denoise-s", "filename": ckpt.name, "revision": "0" * 40}


def test_publish_commits_both_files_and_prints_a_loadable_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stand-in HfApi records the commit and serves it from the local fake Hub; the entry then loads."""
    from huggingface_hub import constants

    torch.manual_seed(0)
    ckpt = tmp_path / "lir-denoise-s.safetensors"
    save_checkpoint(LIR.from_config(SMALL), ckpt)
    server = HubServer().start()
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    calls: list[tuple[str, Any]] = []

    def create_commit(repo_id: str, operations: list[Any], **kwargs: Any) -> Any:
        files = {}
        for op in operations:
            src = op.path_or_fileobj
            files[op.path_in_repo] = Path(src).read_bytes() if isinstance(src, (str, Path)) else bytes(src)
        calls.append(("create_commit", (repo_id, sorted(files), kwargs)))
        return SimpleNamespace(oid=server.add_commit(repo_id, files))

    api = SimpleNamespace(
        create_repo=lambda repo_id, **kw: calls.append(("create_repo", (repo_id, kw))), create_commit=create_commit
    )
    try:
        with local_only_dns():
            assert publish_module().main(publish_args(ckpt), api=api) == 0
            out = capsys.readouterr().out
            text = out.split("manifest entry:\n", 1)[1]
            entry = json.loads("{" + text + "}")["lir-denoise-s"]
            assert calls[0] == ("create_repo", ("acme/lir-denoise-s", {"repo_type": "model", "private": False,
                                                                       "exist_ok": True}))  # fmt: skip
            assert calls[1][1][:2] == ("acme/lir-denoise-s", ["README.md", ckpt.name])
            assert len(entry["hub"]["revision"]) == 40 and entry["hub"]["revision"] in out
            manifest_path = tmp_path / "m" / "weights_manifest.json"
            manifest_path.parent.mkdir()
            manifest_path.write_text(json.dumps({"schema_version": 1, "defaults": {"denoise": "lir-denoise-s"},
                                                 "models": {"lir-denoise-s": entry}}))  # fmt: skip
            from lir.manifest import load_manifest

            loaded = load_weights("denoise", manifest=load_manifest(manifest_path))
            assert loaded.name == "lir-denoise-s" and loaded.config == SMALL
            assert hashlib.sha256(Path(loaded.path or "").read_bytes()).hexdigest() == entry["sha256"]
    finally:
        server.stop()
