"""Writing lir-format safetensors, and converting the authors' BasicSR pickles into them.

A lir-format file is a safetensors file holding the authors' state-dict keys (fixed filter
kernels dropped) with metadata `{"format": "lir", "config": <LIRConfig JSON>, ...}`; converted
files add `source_sha256`, `source_file` and `params_key`.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lir.network import LIRConfig, config_from_state_dict, drop_fixed_kernels
from lir.weights import check_state_dict, read_safetensors, sha256_file

__all__ = ["save_checkpoint", "convert_checkpoint", "load_basicsr_state_dict"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_RESERVED_METADATA = ("format", "config")


def _dtype_name(state_dict: Mapping[str, Tensor]) -> str:
    names = {str(t.dtype).removeprefix("torch.") for t in state_dict.values() if t.is_floating_point()}
    if len(names) != 1:
        raise ValueError(f"checkpoint tensors mix floating dtypes {sorted(names)}; pass dtype= to store one")
    return names.pop()


def save_checkpoint(
    state_dict_or_model: Mapping[str, Tensor] | nn.Module,
    path: str | os.PathLike[str],
    config: LIRConfig | Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    dtype: str | None = None,
) -> str:
    """Write a lir-format safetensors checkpoint atomically and return its sha256.

    Args:
        state_dict_or_model: an `LIR` (its config is used) or a state dict under the authors' keys
            (CPU-layout fixed kernels are checked and dropped).
        path: destination `.safetensors` file; written to a temporary file first, then renamed.
        config: the architecture; default: the model's, else read off the keys.
        metadata: extra metadata; non-string values are stored as JSON ("format"/"config" are reserved).
        dtype: "float32", "float16" or "bfloat16" to cast floating tensors; default: keep.

    Raises:
        ValueError: the weights do not fit the config (first bad key named), a reserved or bad
            metadata key, a non-.safetensors destination.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
    if isinstance(state_dict_or_model, nn.Module):
        if config is None:
            config = getattr(state_dict_or_model, "config", None)
        state_dict: Mapping[str, Tensor] = state_dict_or_model.state_dict()
    else:
        state_dict = state_dict_or_model
    tensors = drop_fixed_kernels(state_dict)
    if config is None:
        config = config_from_state_dict(tensors)
    elif not isinstance(config, LIRConfig):
        config = LIRConfig.from_dict(config)
    check_state_dict(tensors, config, source=str(path))
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")

    # Contiguous, CPU, owning its memory: safetensors refuses views and shared storage.
    out = {}
    for key, value in tensors.items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(_DTYPES[dtype])
        out[key] = value.contiguous().clone()

    meta: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if key in _RESERVED_METADATA:
            raise ValueError(f"metadata key {key!r} is reserved (set by save_checkpoint)")
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    meta["format"] = "lir"
    meta["config"] = json.dumps(config.to_dict())

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic replace: a reader (or a crash) never sees a half-written checkpoint.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(out, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sha256_file(path)


def load_basicsr_state_dict(
    src: str | os.PathLike[str], *, params_key: str | None = None
) -> tuple[dict[str, Tensor], str]:
    """Read an authors' BasicSR checkpoint safely; return (state dict without `module.`, key used).

    Uses `torch.load(weights_only=True)`, which refuses any pickled object other than tensors and
    plain containers, so a hostile file cannot run code. Takes `params_ema` when present, else
    `params`, unless `params_key` says which; a bare state dict is taken as is (key "").

    Raises:
        ValueError: not loadable with weights_only, no such params key (available keys listed),
            or not a state dict.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {src}")
    try:
        raw = torch.load(src, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ValueError(
            f"{src}: cannot be read as a weights-only PyTorch checkpoint (objects other than tensors are refused, "
            f"and truncated files fail): {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{src}: expected a dict of tensors, got {type(raw).__name__}")
    containers = [k for k, v in raw.items() if isinstance(v, Mapping)]
    if params_key is not None:
        if params_key not in raw or not isinstance(raw[params_key], Mapping):
            raise ValueError(f"{src}: no state dict under {params_key!r}; available: {containers or sorted(raw)}")
        key, params = params_key, raw[params_key]
    elif isinstance(raw.get("params_ema"), Mapping):
        key, params = "params_ema", raw["params_ema"]
    elif isinstance(raw.get("params"), Mapping):
        key, params = "params", raw["params"]
    elif raw and all(isinstance(v, Tensor) for v in raw.values()):
        key, params = "", raw
    else:
        raise ValueError(
            f"{src}: neither 'params_ema' nor 'params' holds a state dict (top-level keys: {sorted(map(str, raw))}); "
            "choose one with params_key="
        )
    state_dict: dict[str, Tensor] = {}
    for name, value in params.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"{src}: {key or 'state dict'}[{name!r}] is a {type(value).__name__}, not a tensor")
        # DistributedDataParallel prefixes every key with "module."
        state_dict[name.removeprefix("module.")] = value
    return state_dict, key


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    params_key: str | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """Convert an authors' checkpoint (BasicSR `.pth`, or a safetensors file) into lir format.

    Reads `src` safely (see `load_basicsr_state_dict`; safetensors sources are read directly),
    strips `module.`, checks and drops the fixed kernels, verifies the weights by loading them
    strictly into the network their keys describe, and writes `dst` with metadata
    `{"format": "lir", "config", "source_sha256", "source_file", "params_key"}`.

    Returns:
        The manifest entry for `dst`; `lir.manifest.format_entry(name, entry)` renders it for printing.
        `task` (unless given), `license` and `training.data` are left None for the maintainer to
        fill in: the manifest refuses them empty.

    Raises:
        ValueError: unreadable source, wrong params key, or weights that are not an LIR network's.
    """
    src, dst = Path(src), Path(dst)
    if src.suffix.lower() == ".safetensors":
        state_dict, _ = read_safetensors(src)
        key = ""
    else:
        state_dict, key = load_basicsr_state_dict(src, params_key=params_key)
    state_dict = drop_fixed_kernels(state_dict)
    config = config_from_state_dict(state_dict)
    source_sha = sha256_file(src)
    sha = save_checkpoint(
        state_dict,
        dst,
        config,
        {"source_sha256": source_sha, "source_file": src.name, "params_key": key},
    )
    return {
        "task": task,
        "config": config.to_dict(),
        "file": dst.name,
        "size": dst.stat().st_size,
        "sha256": sha,
        "dtype": _dtype_name(state_dict),
        "bundled": True,
        "hub": None,
        "license": None,
        "training": {"data": None, "steps": None, "hardware": None, "wall_time": None, "started_from": None},
        "metrics": {},
        "converted_from": {"file": src.name, "sha256": source_sha, "params_key": key},
    }
