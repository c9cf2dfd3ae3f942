"""The published-model manifest (`lir/weights_manifest.json`): schema, validation and status.

The manifest is the one source of truth for every checkpoint `lir` can load by name. It ships
inside the package (`lir/weights_manifest.json`; the repository root has a symlink to it), is
read once per process and validated as a whole, so a malformed manifest fails loudly with the
entry and field named, never half-way through a restore.

Schema (version 1)::

    {
      "schema_version": 1,
      "defaults": {"denoise": "<model name>" | null, "deblur": ..., "derain": ..., "dehaze": ...},
      "models": {
        "<model name>": {
          "task": "denoise",                  # one of TASKS
          "description": "...",               # optional, one line
          "config": {"dim": 48, ...},         # LIRConfig.to_dict(); missing fields take defaults
          "file": "<name>.safetensors",       # bare file name, safetensors only
          "size": 29302784,                   # bytes
          "sha256": "<64 lowercase hex>",     # checked before every load
          "dtype": "float32",                 # storage precision: float32 | float16 | bfloat16
          "bundled": true,                    # the wheel carries lir/weights/<file>
          "hub": {                            # or null: only `tools/publish.py` writes this
            "repo_id": "owner/name",
            "filename": "<path in repo>",
            "revision": "<40-hex commit>"     # pinned: a commit hash, never a branch or tag
          },
          "license": "Apache-2.0",
          "training": {
            "data": "BSDS432, 128px crops, ...",
            "steps": 20000 | null,
            "hardware": "2 CPU threads" | null,
            "wall_time": "9 h" | null,
            "started_from": "<model or file name>" | null
          },
          "metrics": {"CBSD68 sigma=25 PSNR (dB)": 30.1, ...},   # free-form, measured figures
          "converted_from": {"file": "...", "sha256": "...", "params_key": "params_ema"}  # optional
        }
      }
    }

Model names are the keys of `models` (lowercase letters, digits, `.`, `_`, `-`). `defaults`
maps each task to the model `lir.load_model(task=...)` uses; a task missing from it, or mapped
to null, has no published model yet. An entry must be bundled, on the Hub, or both.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lir.network import LIRConfig

__all__ = [
    "TASKS",
    "DTYPES",
    "MANIFEST_PATH",
    "ManifestError",
    "HubLocation",
    "TrainingInfo",
    "ModelEntry",
    "Manifest",
    "ModelInfo",
    "load_manifest",
    "parse_manifest",
    "list_models",
    "format_entry",
]

TASKS: tuple[str, ...] = ("denoise", "deblur", "derain", "dehaze")
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
SCHEMA_VERSION = 1
MANIFEST_PATH = Path(__file__).resolve().parent / "weights_manifest.json"

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_ENTRY_FIELDS = {
    "task", "description", "config", "file", "size", "sha256", "dtype", "bundled", "hub",
    "license", "training", "metrics", "converted_from",
}  # fmt: skip
_OPTIONAL_FIELDS = {"description", "converted_from"}
_TRAINING_FIELDS = ("data", "steps", "hardware", "wall_time", "started_from")


class ManifestError(ValueError):
    """The manifest is malformed; the message names the file, the entry and the field."""


@dataclasses.dataclass(frozen=True)
class HubLocation:
    """Where a model lives on the Hugging Face Hub, pinned to one commit."""

    repo_id: str
    filename: str
    revision: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form, as written in the manifest."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TrainingInfo:
    """How a model was trained; unknown figures are None."""

    data: str
    steps: int | None = None
    hardware: str | None = None
    wall_time: str | None = None
    started_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written in the manifest."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One published model of the manifest (see the module docstring for the fields)."""

    name: str
    task: str
    config: LIRConfig
    file: str
    size: int
    sha256: str
    dtype: str
    bundled: bool
    hub: HubLocation | None
    license: str
    training: TrainingInfo
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    description: str = ""
    converted_from: dict[str, Any] | None = dataclasses.field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the entry (without its name, which is the key in `models`)."""
        out: dict[str, Any] = {"task": self.task}
        if self.description:
            out["description"] = self.description
        out.update(
            config=self.config.to_dict(),
            file=self.file,
            size=self.size,
            sha256=self.sha256,
            dtype=self.dtype,
            bundled=self.bundled,
            hub=self.hub.to_dict() if self.hub else None,
            license=self.license,
            training=self.training.to_dict(),
            metrics=dict(self.metrics),
        )
        if self.converted_from is not None:
            out["converted_from"] = dict(self.converted_from)
        return out


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A validated manifest: models by name, each task's default, where bundled files live."""

    path: Path
    models: dict[str, ModelEntry]
    defaults: dict[str, str | None]
    bundled_dir: Path

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task `lir` knows, whether or not it has a published model yet."""
        return TASKS

    def check_task(self, task: str) -> None:
        """Raise ValueError listing the valid tasks if `task` is not one of them."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")

    def default_model(self, task: str) -> ModelEntry:
        """The model `load_model(task=task)` uses.

        Raises:
            ValueError: unknown task (lists the valid ones), or no published model for it yet.
        """
        self.check_task(task)
        name = self.defaults.get(task)
        if name is None:
            have = sorted(t for t in TASKS if self.defaults.get(t))
            have_text = f"tasks with a published model: {', '.join(have)}" if have else "no task has one yet"
            raise ValueError(
                f"no published model for task {task!r} yet ({have_text}). Pass your own checkpoint with "
                "weights='path/to/model.safetensors' (authors' .pth files: convert them first with `lir convert`)."
            )
        return self.models[name]

    def get(self, name: str) -> ModelEntry:
        """The model called `name`; ValueError listing the known names otherwise."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ValueError(f"unknown model {name!r}; known models: {known}") from None

    def bundled_path(self, entry: ModelEntry) -> Path | None:
        """Path of the entry's file inside the package, if the entry is bundled and the file is there."""
        if not entry.bundled:
            return None
        path = self.bundled_dir / entry.file
        return path if path.is_file() else None


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What `list_models()` reports for one model (no network is used to find it)."""

    name: str
    task: str
    is_default: bool
    bundled: bool  # the package carries the file
    cached: bool  # the pinned Hub file is in the local Hugging Face cache
    config: LIRConfig
    metrics: dict[str, Any]


# -- validation ----------------------------------------------------------------------------------


class _Checker:
    """Small helpers so that every error names the file, entry and field in the same way."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ManifestError:
        return ManifestError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected an object, got {type(value).__name__}")
        return value

    def string(self, value: Any, where: str, *, nullable: bool = False) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        return value

    def pattern(self, value: Any, where: str, regex: re.Pattern[str], what: str) -> str:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise self.fail(where, f"expected {what}, got {value!r}")
        return value

    def integer(self, value: Any, where: str, *, minimum: int, nullable: bool = False) -> int | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def keys(self, obj: Mapping[str, Any], where: str, allowed: set[str], required: set[str]) -> None:
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
        missing = sorted(required - set(obj))
        if missing:
            raise self.fail(f"{where}.{missing[0]}", "required field is missing")


def _parse_entry(check: _Checker, name: str, raw: Any) -> ModelEntry:
    where = f"models[{name!r}]"
    if not _NAME.fullmatch(name):
        raise check.fail(where, "model names use lowercase letters, digits, '.', '_' and '-'")
    obj = check.mapping(raw, where)
    check.keys(obj, where, _ENTRY_FIELDS, _ENTRY_FIELDS - _OPTIONAL_FIELDS)

    task = obj["task"]
    if task not in TASKS:
        raise check.fail(f"{where}.task", f"expected one of {', '.join(TASKS)}, got {task!r}")
    try:
        config = LIRConfig.from_dict(check.mapping(obj["config"], f"{where}.config"))
    except (TypeError, ValueError) as err:
        if isinstance(err, ManifestError):
            raise
        raise check.fail(f"{where}.config", str(err)) from None
    file = check.string(obj["file"], f"{where}.file")
    assert file is not None
    # A bare name: it is joined to the package's weights folder and must not escape it.
    if "/" in file or "\\" in file or file.startswith(".") or not file.endswith(".safetensors"):
        raise check.fail(f"{where}.file", f"expected a bare '<name>.safetensors' file name, got {file!r}")
    size = check.integer(obj["size"], f"{where}.size", minimum=1)
    sha = check.pattern(obj["sha256"], f"{where}.sha256", _SHA256, "64 lowercase hex characters")
    dtype = obj["dtype"]
    if dtype not in DTYPES:
        raise check.fail(f"{where}.dtype", f"expected one of {', '.join(DTYPES)}, got {dtype!r}")
    bundled = obj["bundled"]
    if not isinstance(bundled, bool):
        raise check.fail(f"{where}.bundled", f"expected true or false, got {bundled!r}")

    hub = None
    if obj["hub"] is not None:
        h = check.mapping(obj["hub"], f"{where}.hub")
        check.keys(h, f"{where}.hub", {"repo_id", "filename", "revision"}, {"repo_id", "filename", "revision"})
        hub = HubLocation(
            repo_id=check.pattern(h["repo_id"], f"{where}.hub.repo_id", _REPO_ID, "'owner/name'"),
            filename=check.string(h["filename"], f"{where}.hub.filename") or "",
            revision=check.pattern(
                h["revision"], f"{where}.hub.revision", _COMMIT, "a pinned 40-hex commit hash (not a branch or tag)"
            ),
        )
        if not hub.filename.endswith(".safetensors"):
            raise check.fail(f"{where}.hub.filename", f"expected a .safetensors file, got {hub.filename!r}")
    if not bundled and hub is None:
        raise check.fail(where, "neither bundled nor on the Hub: there is nowhere to load it from")

    license_ = check.string(obj["license"], f"{where}.license") or ""
    t = check.mapping(obj["training"], f"{where}.training")
    check.keys(t, f"{where}.training", set(_TRAINING_FIELDS), {"data"})
    training = TrainingInfo(
        data=check.string(t["data"], f"{where}.training.data") or "",
        steps=check.integer(t.get("steps"), f"{where}.training.steps", minimum=0, nullable=True),
        hardware=check.string(t.get("hardware"), f"{where}.training.hardware", nullable=True),
        wall_time=check.string(t.get("wall_time"), f"{where}.training.wall_time", nullable=True),
        started_from=check.string(t.get("started_from"), f"{where}.training.started_from", nullable=True),
    )
    metrics = dict(check.mapping(obj["metrics"], f"{where}.metrics"))
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise check.fail(f"{where}.description", f"expected a string, got {description!r}")
    converted_from = obj.get("converted_from")
    if converted_from is not None:
        converted_from = dict(check.mapping(converted_from, f"{where}.converted_from"))
    return ModelEntry(
        name=name,
        task=task,
        config=config,
        file=file,
        size=size or 0,
        sha256=sha,
        dtype=dtype,
        bundled=bundled,
        hub=hub,
        license=license_,
        training=training,
        metrics=metrics,
        description=description,
        converted_from=converted_from,
    )


def parse_manifest(data: Any, *, path: str | os.PathLike[str] = MANIFEST_PATH) -> Manifest:
    """Validate decoded manifest JSON; `path` names the file in errors and locates bundled files.

    Raises:
        ManifestError: (a ValueError) naming the entry and field that is wrong.
    """
    path = Path(path).resolve()
    check = _Checker(path.name)
    top = check.mapping(data, "top level")
    check.keys(top, "top level", {"schema_version", "defaults", "models"}, {"schema_version", "defaults", "models"})
    if top["schema_version"] != SCHEMA_VERSION:
        raise check.fail("schema_version", f"this lir reads version {SCHEMA_VERSION}, got {top['schema_version']!r}")

    models: dict[str, ModelEntry] = {}
    for name, raw in check.mapping(top["models"], "models").items():
        models[name] = _parse_entry(check, name, raw)
    files: dict[str, str] = {}
    for entry in models.values():
        if entry.file in files:
            raise check.fail(f"models[{entry.name!r}].file", f"{entry.file!r} is also used by {files[entry.file]!r}")
        files[entry.file] = entry.name

    defaults: dict[str, str | None] = {task: None for task in TASKS}
    for task, name in check.mapping(top["defaults"], "defaults").items():
        where = f"defaults[{task!r}]"
        if task not in TASKS:
            raise check.fail(where, f"unknown task; valid tasks: {', '.join(TASKS)}")
        if name is None:
            continue
        if name not in models:
            raise check.fail(where, f"no model called {name!r} in 'models'")
        if models[name].task != task:
            raise check.fail(where, f"model {name!r} is a {models[name].task!r} model")
        defaults[task] = name
    return Manifest(path=path, models=models, defaults=defaults, bundled_dir=path.parent / "weights")


@functools.lru_cache(maxsize=8)
def _load_cached(path: Path) -> Manifest:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ManifestError(f"cannot read the weights manifest {path}: {err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path.name}: not valid JSON: {err}") from None
    return parse_manifest(data, path=path)


def load_manifest(path: str | os.PathLike[str] | None = None) -> Manifest:
    """Read and validate the manifest (the packaged one by default); cached per path.

    Raises:
        ManifestError: (a ValueError) the file is unreadable, not JSON, or names a bad entry/field.
    """
    return _load_cached(Path(path if path is not None else MANIFEST_PATH).resolve())


load_manifest.cache_clear = _load_cached.cache_clear  # type: ignore[attr-defined]


def _is_cached(entry: ModelEntry) -> bool:
    if entry.hub is None:
        return False
    # Imported here: huggingface_hub is only needed once a Hub model is looked at.
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(entry.hub.repo_id, entry.hub.filename, revision=entry.hub.revision)
    return isinstance(found, str)


def list_models(manifest: Manifest | None = None) -> list[ModelInfo]:
    """Every published model, with whether the package bundles it and whether the Hub copy is cached.

    Looks only at local files (package and Hugging Face cache); never uses the network.
    """
    manifest = manifest or load_manifest()
    defaults = {name for name in manifest.defaults.values() if name}
    return [
        ModelInfo(
            name=entry.name,
            task=entry.task,
            is_default=entry.name in defaults,
            bundled=manifest.bundled_path(entry) is not None,
            cached=_is_cached(entry),
            config=entry.config,
            metrics=dict(entry.metrics),
        )
        for entry in sorted(manifest.models.values(), key=lambda e: (TASKS.index(e.task), e.name))
    ]


def format_entry(name: str, entry: Mapping[str, Any]) -> str:
    """`"name": {...}` as it would be pasted into the manifest's `models` object."""
    body = json.dumps(dict(entry), indent=2, ensure_ascii=False)
    return f"{json.dumps(name)}: {body}"
