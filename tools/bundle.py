"""Bundle a trained checkpoint into the package and record it in the manifest (maintainers only).

    python tools/bundle.py runs/denoise/ema.safetensors --name lir-denoise-dim32 --task denoise \\
        --license MIT --training-data "CBSD432 ..." --steps 2900 --metrics metrics.json --default

Re-saves the weights as `lir/weights/<name>.safetensors` (float32, config and training facts in
the metadata), then writes its entry (size, sha256, bundled, no Hub location: only
`tools/publish.py` adds one) into `lir/weights_manifest.json`, replacing an entry of the same
name. The weights are staged and the whole manifest validated before either file is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lir.checkpoint import save_checkpoint  # noqa: E402
from lir.manifest import MANIFEST_PATH, TASKS, parse_manifest  # noqa: E402
from lir.weights import load_weights  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="lir-format .safetensors (e.g. a training run's ema.safetensors)")
    p.add_argument("--name", required=True)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--license", required=True)
    p.add_argument("--training-data", required=True)
    p.add_argument("--description")
    p.add_argument("--steps", type=int)
    p.add_argument("--hardware")
    p.add_argument("--wall-time")
    p.add_argument("--started-from")
    p.add_argument("--metrics", type=Path, help="JSON object of measured figures")
    p.add_argument("--default", action="store_true", help="make it the task's default model")
    args = p.parse_args()

    loaded = load_weights(args.task, args.checkpoint)
    target = MANIFEST_PATH.parent / "weights" / f"{args.name}.safetensors"
    target.parent.mkdir(exist_ok=True)
    training = {
        "data": args.training_data,
        "steps": args.steps,
        "hardware": args.hardware,
        "wall_time": args.wall_time,
        "started_from": args.started_from,
    }
    # Staged beside the target so that a bad argument or an invalid entry leaves the bundled
    # weights and the manifest as they were, never one without the other.
    with tempfile.TemporaryDirectory(dir=target.parent) as staging:
        staged = Path(staging) / target.name
        sha256 = save_checkpoint(
            loaded.state_dict, staged, loaded.config, {"task": args.task, "name": args.name, "training": training},
            dtype="float32",
        )
        entry = {
            "task": args.task,
            **({"description": args.description} if args.description else {}),
            "config": loaded.config.to_dict(),
            "file": target.name,
            "size": staged.stat().st_size,
            "sha256": sha256,
            "dtype": "float32",
            "bundled": True,
            "hub": None,
            "license": args.license,
            "training": training,
            "metrics": json.loads(args.metrics.read_text()) if args.metrics else {},
        }
        manifest = json.loads(MANIFEST_PATH.read_text())
        manifest["models"][args.name] = entry
        if args.default:
            manifest["defaults"][args.task] = args.name
        parse_manifest(manifest)
        os.replace(staged, target)
    MANIFEST_PATH.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(f"bundled {target} ({entry['size']} bytes, sha256 {sha256}) as {args.name!r}")


if __name__ == "__main__":
    main()
