"""Finding, verifying and reading LIR checkpoints (safetensors only; pickles are never opened).

Resolution for `load_weights(task, weights)`:

1. `weights` given: a `.safetensors` path, an in-memory state dict, or a manifest model name.
2. Otherwise the task's default model in the manifest: the file bundled in the package if it is
   there, else `huggingface_hub.hf_hub_download` at the manifest's pinned commit (honouring
   HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE and `local_files_only`).

Every manifest file's sha256 is checked before it is read; a Hub file that fails the check is
removed from the cache, so the next call downloads it afresh instead of reusing it. Nothing here
touches the network at import time (huggingface_hub is imported on first use).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from lir.manifest import Manifest, ModelEntry, load_manifest
from lir.network import LIR, LIRConfig, config_from_state_dict, drop_fixed_kernels

__all__ = [
    "LoadedWeights",
    "ChecksumError",
    "WeightsNotAvailableError",
    "load_weights",
    "fetch_model",
    "read_safetensors",
    "check_state_dict",
    "sha256_file",
    "PICKLE_SUFFIXES",
]

PICKLE_SUFFIXES: frozenset[str] = frozenset({".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle"})
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
_CONVERT_HINT = (
    "Convert it once with `lir convert {src} {dst}` (or lir.convert_checkpoint), which reads it with "
    "torch.load(weights_only=True) and writes safetensors."
)


class ChecksumError(ValueError):
    """A manifest file's sha256 differs from the manifest's."""


class WeightsNotAvailableError(OSError):
    """The checkpoint cannot be obtained (offline and not cached, Hub unreachable, file missing)."""


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    """A verified checkpoint: its tensors (authors' layout, fixed kernels dropped) and the network holding them.

    Attributes:
        name: the manifest model name, the file path, or "<state dict>".
        config: the architecture the weights belong to.
        state_dict: tensors under the authors' keys, already checked to load strictly.
        network: the `LIR` of `config` these weights were loaded into (the check's own network,
            so a load builds it once), in eval mode.
        path: the file the weights were read from (None for an in-memory state dict).
        entry: the manifest entry (license, metrics, ...) when loaded by model name or task.
    """

    name: str
    config: LIRConfig
    state_dict: dict[str, Tensor] = dataclasses.field(repr=False, compare=False)
    network: LIR = dataclasses.field(repr=False, compare=False)
    path: str | None = None
    entry: ModelEntry | None = dataclasses.field(default=None, repr=False, compare=False)


# -- hashing -------------------------------------------------------------------------------------

_verified: dict[tuple[str, int, int, int], str] = {}
_verified_lock = threading.Lock()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_sha256_memo(path: Path) -> str:
    # Re-hashing a 30 MB checkpoint on every load_model call is wasted time; a file whose inode,
    # size and mtime are unchanged since it was hashed in this process has the same content.
    st = path.stat()
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _verified_lock:
        known = _verified.get(key)
    if known is None:
        known = sha256_file(path)
        with _verified_lock:
            _verified[key] = known
    return known


# -- reading files -------------------------------------------------------------------------------


def _refuse_pickle(path: Path, why: str) -> ValueError:
    dst = path.with_suffix(".safetensors").name
    return ValueError(
        f"{path}: {why}. lir loads only safetensors and never unpickles a file, because unpickling can run "
        f"arbitrary code. " + _CONVERT_HINT.format(src=path.name, dst=dst)
    )


def _looks_like_pickle(head: bytes) -> bool:
    # torch.save's zip container, or a raw pickle (protocol 2+ starts with PROTO 0x80, then 2..5).
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _check_safetensors_layout(path: Path) -> None:
    """Raise ValueError unless the file is a complete safetensors file (reads only its header)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        first = f.read(1)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if first != b"{" or not 0 < n <= _MAX_HEADER:
            # Not safetensors: say "pickle" when it is one, without ever unpickling it.
            if _looks_like_pickle(head):
                raise _refuse_pickle(path, "this is a PyTorch pickle, not a safetensors file")
            if size < 9:
                raise ValueError(f"{path}: truncated or empty file ({size} bytes), not a safetensors checkpoint")
            raise ValueError(f"{path}: not a safetensors file (bad header); lir reads only .safetensors checkpoints")
        if n > size - 8:
            raise ValueError(f"{path}: truncated safetensors file ({size} bytes; its header alone needs {n + 8})")
        raw = first + f.read(n - 1)
    try:
        header = json.loads(raw)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise ValueError(f"{path}: corrupted safetensors header ({err})") from None
    needed = 8 + n + max(ends, default=0)
    if size < needed:
        raise ValueError(f"{path}: truncated safetensors file: {size} bytes, its header describes {needed}")


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, refusing pickles without opening them.

    Raises:
        ValueError: pickle suffix or content (message points to `lir convert`), truncated or
            corrupted file.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        # Refused on the name alone: the file is not even opened.
        raise _refuse_pickle(path, f"'{path.suffix}' files are PyTorch pickles")
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    _check_safetensors_layout(path)
    # Imported on use, like huggingface_hub, to keep `import lir` light.
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError for any damage
        raise ValueError(f"{path}: corrupted safetensors file ({err})") from None
    return tensors, metadata


# -- checking a state dict against the network ---------------------------------------------------


def _first_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> str | None:
    for key, value in expected.items():
        if key not in given:
            return f"missing key {key!r}"
        if tuple(given[key].shape) != tuple(value.shape):
            return f"key {key!r} has shape {tuple(given[key].shape)}, the network expects {tuple(value.shape)}"
    for key in given:
        if key not in expected:
            return f"unexpected key {key!r}"
    return None


def check_state_dict(state_dict: Mapping[str, Tensor], config: LIRConfig, *, source: str = "checkpoint") -> LIR:
    """Build `LIR(config)`, load `state_dict` strictly and return it (eval mode); ValueError naming the first bad key.

    Raises:
        ValueError: a missing, unexpected or wrongly shaped key (the first one is named), with a
            hint when the keys describe another configuration.
    """
    model = LIR.from_config(config)
    try:
        model.load_state_dict(state_dict, strict=True)
        return model.eval()
    except RuntimeError as err:
        problem = _first_mismatch(model.state_dict(), state_dict) or str(err).strip()
    hint = ""
    try:
        other = config_from_state_dict(state_dict)
        if other != config:
            hint = f" The keys describe another configuration: {other.to_dict()} instead of {config.to_dict()}."
    except ValueError as err:
        hint = f" ({err})"
    raise ValueError(f"{source} does not fit the LIR network {config.to_dict()}: {problem}.{hint}")


def _as_state_dict(weights: Mapping[str, Any]) -> dict[str, Tensor]:
    if {"params", "params_ema"} & set(weights) and not isinstance(
        weights.get("params", weights.get("params_ema")), Tensor
    ):
        raise ValueError(
            "this is a raw BasicSR training dict ('params'/'params_ema'); pass its 'params_ema' (or 'params') "
            "state dict, or convert the file with `lir convert`"
        )
    out = {}
    for key, value in weights.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be str, got {type(key).__name__} ({key!r})")
        if not isinstance(value, Tensor):
            raise TypeError(f"state dict value for {key!r} must be a torch.Tensor, got {type(value).__name__}")
        out[key] = value
    return out


def _config_from_metadata(metadata: Mapping[str, str], source: str) -> LIRConfig | None:
    text = metadata.get("config")
    if text is None:
        return None
    try:
        return LIRConfig.from_dict(json.loads(text))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: bad 'config' in the file's metadata: {err}") from None


def _finish(
    name: str, state_dict: dict[str, Tensor], config: LIRConfig | None, path: str | None, entry: ModelEntry | None
) -> LoadedWeights:
    state_dict = drop_fixed_kernels(state_dict)
    if config is None:
        config = config_from_state_dict(state_dict)
    network = check_state_dict(state_dict, config, source=name)
    return LoadedWeights(name=name, config=config, state_dict=state_dict, network=network, path=path, entry=entry)


def _load_file(path: Path, *, entry: ModelEntry | None = None) -> LoadedWeights:
    tensors, metadata = read_safetensors(path)
    name = entry.name if entry else str(path)
    config = entry.config if entry else _config_from_metadata(metadata, str(path))
    return _finish(name, tensors, config, str(path), entry)


# -- manifest models: bundled file or Hub download -----------------------------------------------


def _env_offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at its import; read it again so that setting it
    # later in the process (before a load) is honoured too.
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    # is_offline_mode() only exists in recent releases; HF_HUB_OFFLINE in all of them.
    flag = getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)()
    return bool(flag) or value in {"1", "ON", "YES", "TRUE"}


def _evict(path: Path) -> str | None:
    """Remove a bad Hub file from the cache: the snapshot link and the blob it points to.

    Returns None on success, else why it could not be removed (e.g. a read-only shared cache).
    """
    blob = Path(os.path.realpath(path))
    for victim in (path, blob):
        try:
            victim.unlink()
        except FileNotFoundError:
            pass  # a concurrent call may have removed it already
        except OSError as err:
            return str(err)
    return None


def _verify(path: Path, entry: ModelEntry, *, evict: bool) -> None:
    actual = _file_sha256_memo(path)
    if actual == entry.sha256:
        return
    if evict:
        problem = _evict(path)
        if problem is None:
            after = "It was removed from the Hugging Face cache; the next call downloads it again."
        else:
            after = f"It could not be removed from the cache ({problem}): delete {path} and its blob by hand."
    else:
        after = "The installation is damaged: reinstall lir-restore, or pass weights='path/to/model.safetensors'."
    raise ChecksumError(
        f"checksum mismatch for {entry.file} (model {entry.name!r}, {path}): "
        f"expected sha256 {entry.sha256}, got {actual}. {after}"
    )


def _download(entry: ModelEntry, *, local_files_only: bool) -> Path:
    assert entry.hub is not None
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,  # the remote "no such file" error, or its base class in newer releases
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from huggingface_hub import try_to_load_from_cache

    hub = entry.hub
    where = f"{hub.filename} from {hub.repo_id}@{hub.revision[:12]}"
    # The revision is a pinned commit, so a cached copy is final: use it without any request
    # (hf_hub_download would also return it, but only after building headers, which can fetch
    # huggingface_hub's telemetry registry from the network).
    cached = try_to_load_from_cache(hub.repo_id, hub.filename, revision=hub.revision)
    if isinstance(cached, str):
        return Path(cached)
    offline = local_files_only or _env_offline()
    try:
        from lir import __version__ as version  # type: ignore[attr-defined]
    except ImportError:
        version = None
    try:
        path = hf_hub_download(
            hub.repo_id,
            hub.filename,
            revision=hub.revision,
            local_files_only=offline,
            library_name="lir",
            library_version=version,
        )
    except LocalEntryNotFoundError as err:
        if offline:
            why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
            raise WeightsNotAvailableError(
                f"model {entry.name!r} ({where}) is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                f"downloads are disabled ({why}). To fix: connect to the internet with downloads enabled "
                "(unset HF_HUB_OFFLINE or set HF_HUB_OFFLINE=0, local_files_only=False) to fetch it once, or pass "
                "weights='path/to/model.safetensors'."
            ) from err
        raise WeightsNotAvailableError(
            f"could not download model {entry.name!r} ({where}) from {constants.ENDPOINT} and it is not in the "
            f"Hugging Face cache ({constants.HF_HUB_CACHE}): {err.__cause__ or err}. Check your connection "
            "(and HF_ENDPOINT), or pass weights='path/to/model.safetensors'."
        ) from err
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as err:  # after the Local one
        raise WeightsNotAvailableError(
            f"the Hub has no {where} (model {entry.name!r}): {type(err).__name__}. The manifest entry is wrong "
            "(or the repository is private); pass weights='path/to/model.safetensors' meanwhile."
        ) from err
    except Exception as err:  # httpx errors, size consistency checks, HTTP errors mid-download
        raise WeightsNotAvailableError(
            f"downloading model {entry.name!r} ({where}) from {constants.ENDPOINT} failed: {err}"
        ) from err
    return Path(path)


def fetch_model(
    name: str | ModelEntry, *, local_files_only: bool = False, manifest: Manifest | None = None
) -> Path:
    """Local path of a manifest model's file, sha256-verified: the bundled copy, else the Hub's.

    Raises:
        ValueError: unknown model name (lists the known ones).
        ChecksumError: the file's sha256 is not the manifest's (a Hub copy is evicted first).
        WeightsNotAvailableError: not bundled, and offline/unreachable and not cached.
    """
    manifest = manifest or load_manifest()
    entry = manifest.get(name) if isinstance(name, str) else name
    bundled = manifest.bundled_path(entry)
    if bundled is not None:
        _verify(bundled, entry, evict=False)
        return bundled
    if entry.hub is None:
        raise WeightsNotAvailableError(
            f"model {entry.name!r} should be bundled in the package as {manifest.bundled_dir / entry.file}, but the "
            "file is missing and the model has no Hub location. Reinstall lir-restore, or pass weights='...'."
        )
    path = _download(entry, local_files_only=local_files_only)
    _verify(path, entry, evict=True)
    return path


# -- the public entry point ----------------------------------------------------------------------


def _looks_like_path(text: str) -> bool:
    suffix = Path(text).suffix.lower()
    has_sep = os.sep in text or "/" in text
    return has_sep or suffix == ".safetensors" or suffix in PICKLE_SUFFIXES or os.path.exists(text)


def load_weights(
    task: str = "denoise",
    weights: str | os.PathLike[str] | Mapping[str, Tensor] | None = None,
    *,
    local_files_only: bool = False,
    manifest: Manifest | None = None,
) -> LoadedWeights:
    """Find, verify and read the checkpoint for `task` (or the explicit `weights`).

    Args:
        task: one of `lir.manifest.TASKS`; picks the default model when `weights` is None.
        weights: a `.safetensors` path, an in-memory state dict (authors' keys), or a manifest
            model name. Pickles (`.pth`, `.pt`, `.bin`, ...) are refused without being opened.
        local_files_only: never use the network (as HF_HUB_OFFLINE=1 does).
        manifest: the manifest to resolve names in (default: the packaged one).

    Raises:
        ValueError: unknown task or model (valid ones listed), no model for the task yet, a pickle,
            a truncated/corrupted file, a checkpoint of another network or config (first bad key).
        ChecksumError: (a ValueError) a manifest file whose sha256 is not the manifest's.
        WeightsNotAvailableError: (an OSError) offline and not cached, or the Hub unreachable.
        FileNotFoundError: `weights` names a file that does not exist.
    """
    manifest = manifest or load_manifest()
    manifest.check_task(task)
    if weights is None:
        entry = manifest.default_model(task)
        return _load_file(fetch_model(entry, local_files_only=local_files_only, manifest=manifest), entry=entry)
    if isinstance(weights, Mapping):
        return _finish("<state dict>", _as_state_dict(weights), None, None, None)
    if isinstance(weights, str) and not _looks_like_path(weights):
        if weights not in manifest.models:
            known = ", ".join(sorted(manifest.models)) or "none published yet"
            raise ValueError(
                f"weights={weights!r} is neither an existing file nor a known model name (known models: {known})"
            )
        entry = manifest.models[weights]
        return _load_file(fetch_model(entry, local_files_only=local_files_only, manifest=manifest), entry=entry)
    if isinstance(weights, (str, os.PathLike)):
        return _load_file(Path(weights))
    raise TypeError(
        f"weights must be a path, a state dict (Mapping[str, Tensor]) or a model name, got {type(weights).__name__}"
    )

