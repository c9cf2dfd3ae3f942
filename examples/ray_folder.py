"""Restore a folder of images on Ray Data: read, restore on a pool of actors, write with the same names.

    pip install "lir-restore[ray]"
    python examples/ray_folder.py INPUT_FOLDER OUTPUT_FOLDER [--task denoise] [--weights W] [--mode RGB]
        [--actors 1] [--cpus-per-actor N] [--gpus-per-actor 0] [--batch-size 4] [--read-images]

Files are read as bytes (`ray.data.read_binary_files`) and decoded by `lir.ray_data.RestoreBatch`, so a
corrupt file is reported and the others are still restored. `--read-images` reads with
`ray.data.read_images` instead (Ray decodes; a corrupt file then stops the whole run). Outputs keep
their path relative to INPUT_FOLDER and their file name, and the extension picks the format; EXIF
and ICC profiles are not carried over here (`lir restore` keeps them). Ray Data holds one dtype per
column, so give `--mode RGB` for a folder that mixes 8-bit and 16-bit files.

`ray.init()` starts a local cluster, or joins the one RAY_ADDRESS names. Actors take `--cpus-per-actor`
CPUs each (torch uses that many threads) or `--gpus-per-actor` GPUs; leave at least one CPU of the
cluster to the read and write tasks, or Ray Data waits for it forever.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import ray
from PIL import Image

from lir.fileio import IMAGE_EXTENSIONS
from lir.ray_data import RestoreBatch, as_image


def write_batch(batch: dict[str, np.ndarray], root: str, out: str) -> dict[str, np.ndarray]:
    """Write the restored rows under ``out`` with their paths relative to ``root``; keep path, error, pixels."""
    errors = list(batch["error"])
    pixels = np.zeros(len(errors), dtype=np.int64)
    for i, (path, image) in enumerate(zip(batch["path"], batch["image"])):
        if errors[i]:
            continue
        try:
            arr = as_image(image)
            with Image.open(path) as source:
                mode = source.mode
            # An array cannot say it holds CMYK: take the mode from the source file.
            if mode == "CMYK":
                img = Image.frombytes("CMYK", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr).tobytes())
            else:
                img = Image.fromarray(arr)
            dst = Path(out) / Path(path).relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            img.save(dst)
            pixels[i] = arr.shape[0] * arr.shape[1]
        except (OSError, ValueError, TypeError) as exc:
            errors[i] = f"{path}: cannot write the result: {type(exc).__name__}: {exc}"
    return {"path": batch["path"], "error": np.array(errors, dtype=object), "pixels": pixels}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("output", type=Path, help="folder for the restored images (created)")
    parser.add_argument("--task", default="denoise")
    parser.add_argument("--weights", help="a .safetensors checkpoint or a model name (default: the task's model)")
    parser.add_argument("--mode", help="PIL mode to decode every file to, e.g. RGB (default: each file's own)")
    parser.add_argument("--actors", type=int, default=1, help="restoring actors (default 1)")
    parser.add_argument("--cpus-per-actor", type=float, help="CPUs per actor (default: all but one, split)")
    parser.add_argument("--gpus-per-actor", type=float, default=0, help="GPUs per actor, e.g. 1 or 0.5 (default 0)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch (default 4)")
    parser.add_argument("--read-images", action="store_true", help="decode with ray.data.read_images")
    args = parser.parse_args(argv)
    if not args.input.is_dir():
        parser.error(f"{args.input} is not a folder")
    root = str(args.input.resolve())

    if not ray.is_initialized():
        ray.init()
    total_cpus = ray.cluster_resources().get("CPU", 1)
    cpus = args.cpus_per_actor
    if cpus is None:
        cpus = 1 if args.gpus_per_actor else max(1, int(total_cpus - 1) // args.actors)
    if args.actors * cpus >= total_cpus:
        parser.error(f"{args.actors} actors × {cpus:g} CPUs leave none of the cluster's {total_cpus:g} CPUs "
                     "to the read and write tasks; use fewer")

    extensions = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
    if args.read_images:
        ds = ray.data.read_images(root, include_paths=True, file_extensions=extensions, mode=args.mode)
        column = "image"
    else:
        ds = ray.data.read_binary_files(root, include_paths=True, file_extensions=extensions)
        column = "bytes"
    restore_kwargs = {"task": args.task, "weights": args.weights, "column": column,
                      "mode": None if args.read_images else args.mode}
    ds = ds.map_batches(RestoreBatch, fn_constructor_kwargs=restore_kwargs, batch_size=args.batch_size,
                        compute=ray.data.ActorPoolStrategy(size=args.actors), num_cpus=cpus,
                        num_gpus=args.gpus_per_actor or None)
    ds = ds.map_batches(write_batch, fn_kwargs={"root": root, "out": str(args.output.resolve())},
                        batch_size=args.batch_size)

    start = time.perf_counter()
    done = failed = pixels = 0
    for row in ds.iter_rows():
        if not row["error"]:
            done += 1
            pixels += int(row["pixels"])
        else:
            failed += 1
            print(f"failed: {row['error']}", flush=True)
    seconds = time.perf_counter() - start
    print(f"{done} restored, {failed} failed in {seconds:.1f} s: {done / seconds:.2f} images/s, "
          f"{pixels / 1e6 / seconds:.3f} megapixels/s ({args.actors} actor(s), {cpus:g} CPUs"
          f"{f', {args.gpus_per_actor:g} GPUs' if args.gpus_per_actor else ''} each; cluster of {total_cpus:g} CPUs)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
