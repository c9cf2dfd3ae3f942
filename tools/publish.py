#!/usr/bin/env python
"""Maintainer tool: upload an lir checkpoint and its model card to a Hugging Face Hub repo.

It uploads both files in one commit (`HfApi.create_commit`), downloads the file back at that
commit to check its sha256, and prints the manifest entry with `hub.revision` set to the commit
hash. Paste that entry into `lir/weights_manifest.json`: a Hub location in the manifest must
always come from a run of this tool.

    python tools/publish.py lir-denoise-s.safetensors --repo-id OWNER/lir-denoise-s \\
        --name lir-denoise-s --task denoise --license apache-2.0 \\
        --training-data "BSDS432, 128px crops, AWGN sigma in [0, 50]" --steps 20000 \\
        --hardware "2 CPU threads" --wall-time "9 h" --metrics metrics.json [--bundled] [--dry-run]

Authentication: `hf auth login` or HF_TOKEN (or --token). `--dry-run` only prints what would be
uploaded and the entry (with a placeholder revision); it makes no network call.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

# Run from a checkout without installing: import the lir next to this tool.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lir.manifest import TASKS, format_entry, parse_manifest  # noqa: E402
from lir.weights import load_weights, sha256_file  # noqa: E402

PLACEHOLDER_REVISION = "0" * 40  # stands in for the commit hash in --dry-run output


def build_entry(args: argparse.Namespace, path: Path, revision: str) -> dict[str, Any]:
    """The manifest entry for the checkpoint, verified by loading it strictly into the network."""
    loaded = load_weights(args.task, weights=path)  # strict: refuses files that are not LIR's
    dtypes = {str(t.dtype).removeprefix("torch.") for t in loaded.state_dict.values() if t.is_floating_point()}
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else {}
    entry = {
        "task": args.task,
        "description": args.description or f"LIR {args.task} model",
        "config": loaded.config.to_dict(),
        "file": args.file or Path(args.filename or path.name).name,
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "dtype": dtypes.pop() if len(dtypes) == 1 else "float32",
        "bundled": args.bundled,
        "hub": {"repo_id": args.repo_id, "filename": args.filename or path.name, "revision": revision},
        "license": args.license,
        "training": {
            "data": args.training_data,
            "steps": args.steps,
            "hardware": args.hardware,
            "wall_time": args.wall_time,
            "started_from": args.started_from,
        },
        "metrics": metrics,
    }
    # Validate with the manifest's own rules before anything is uploaded.
    parse_manifest({"schema_version": 1, "defaults": {}, "models": {args.name: entry}}, path="publish")
    return entry


def model_card(args: argparse.Namespace, entry: dict[str, Any]) -> str:
    """README.md for the Hub repo: YAML metadata the Hub reads, then what the manifest records."""
    if args.card:
        return Path(args.card).read_text(encoding="utf-8")
    training = entry["training"]
    lines = [
        "---",
        f"license: {args.license}",
        "library_name: lir",
        "pipeline_tag: image-to-image",
        "tags:",
        "- image-restoration",
        f"- {args.task}",
        "- lir",
        "---",
        "",
        f"# {args.name}",
        "",
        f"{entry['description']}. LIR network (\"LIR: A Lightweight Baseline for Image Restoration\", ACM MM 2024), "
        "weights in safetensors, for the `lir-restore` Python package.",
        "",
        "```python",
        "import lir",
        f'restored = lir.restore("photo.png", task="{args.task}")  # uses this model when it is the default',
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{entry['hub']['filename']}` ({entry['size']:,} bytes, {entry['dtype']}) |",
        f"| sha256 | `{entry['sha256']}` |",
        f"| config | `{json.dumps(entry['config'])}` |",
        f"| training data | {training['data']} |",
        f"| steps | {training['steps'] if training['steps'] is not None else 'n/a'} |",
        f"| hardware | {training['hardware'] or 'n/a'} |",
        f"| wall time | {training['wall_time'] or 'n/a'} |",
        f"| started from | {training['started_from'] or 'scratch'} |",
        "",
    ]
    if entry["metrics"]:
        lines += ["## Measured", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in entry["metrics"].items()]
        lines.append("")
    return "\n".join(lines)


def upload(args: argparse.Namespace, path: Path, card: str, api: Any) -> str:
    """Create the repo if needed and commit the checkpoint and card together; return the commit hash."""
    from huggingface_hub import CommitOperationAdd

    api.create_repo(args.repo_id, repo_type="model", private=args.private, exist_ok=True)
    info = api.create_commit(
        args.repo_id,
        operations=[
            CommitOperationAdd(path_in_repo=args.filename or path.name, path_or_fileobj=str(path)),
            CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")),
        ],
        commit_message=args.message or f"Upload {args.name}",
        revision=args.branch,
        repo_type="model",
    )
    return str(info.oid)


def verify_download(args: argparse.Namespace, path: Path, revision: str, expected_sha: str) -> None:
    """Download the file back at the new commit (into a throwaway cache) and compare its sha256."""
    from huggingface_hub import hf_hub_download

    with tempfile.TemporaryDirectory() as cache:
        got = hf_hub_download(
            args.repo_id, args.filename or path.name, revision=revision, cache_dir=cache, token=args.token
        )
        actual = sha256_file(got)
    if actual != expected_sha:
        raise SystemExit(f"uploaded file at {revision} has sha256 {actual}, expected {expected_sha}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="lir-format .safetensors file (see `lir convert`)")
    p.add_argument("--repo-id", required=True, help="Hub model repo, OWNER/NAME")
    p.add_argument("--name", required=True, help="manifest model name, e.g. lir-denoise-s")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--license", required=True, help="license id for the weights, e.g. apache-2.0")
    p.add_argument("--training-data", required=True, help="what it was trained on")
    p.add_argument("--steps", type=int)
    p.add_argument("--hardware")
    p.add_argument("--wall-time")
    p.add_argument("--started-from", help="model or file the training started from")
    p.add_argument("--metrics", help="JSON file with measured figures (free-form object)")
    p.add_argument("--description")
    p.add_argument("--card", help="model card to upload as README.md (default: generated)")
    p.add_argument("--filename", help="path in the repo (default: the checkpoint's name)")
    p.add_argument("--file", help="manifest 'file' name (default: the checkpoint's name)")
    p.add_argument("--bundled", action="store_true", help="the package also ships this file in lir/weights/")
    p.add_argument("--branch", default="main", help="branch to commit to (the manifest pins the commit anyway)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--token", help="Hub token (default: the logged-in one / HF_TOKEN)")
    p.add_argument("--no-verify", action="store_true", help="skip downloading the file back to check its hash")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded; no network")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, api: Any = None) -> int:
    """Run the tool; `api` replaces `huggingface_hub.HfApi(token=...)` (used by tests)."""
    args = parse_args(argv)
    path: Path = args.checkpoint
    entry = build_entry(args, path, PLACEHOLDER_REVISION)
    card = model_card(args, entry)
    if args.dry_run:
        print(f"would create (if missing) the model repo {args.repo_id} and commit to {args.branch}:")
        print(f"  {entry['hub']['filename']}  <- {path} ({entry['size']:,} bytes, sha256 {entry['sha256']})")
        card_sha = hashlib.sha256(card.encode()).hexdigest()[:12]
        print(f"  README.md  <- model card ({len(card.encode()):,} bytes, sha256 {card_sha}...)")
        print("\n--- README.md ---\n" + card + "--- end ---\n")
        print(f"manifest entry (revision {PLACEHOLDER_REVISION} stands for the commit hash of the upload):")
        print(format_entry(args.name, entry))
        return 0
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=args.token)
    revision = upload(args, path, card, api)
    if not args.no_verify:
        verify_download(args, path, revision, entry["sha256"])
    entry["hub"]["revision"] = revision
    print(f"uploaded {path.name} and README.md to {args.repo_id} at commit {revision}; manifest entry:")
    print(format_entry(args.name, entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
