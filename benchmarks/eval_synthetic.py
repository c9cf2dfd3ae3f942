#!/usr/bin/env python
"""Deblur / derain / dehaze benchmark of an LIR checkpoint on held-out synthetic degradations.

No paired deblurring or dehazing test sets could be obtained here (GoPro, HIDE, RealBlur, SOTS),
so those tasks are measured on Kodak24 and McMaster18 degraded by the task's *held-out* setting
in ``training/degradations.py`` (parameters at the hard ends of the training ranges, seeds
``HELD_OUT_SEED_BASE + offset(set) + index`` that training never draws). Derain is also measured on
the real paired Rain100H test set (``paired/Rain100H``). Deblur and derain have a second
synthetic row, ``moderate_blur`` (slight shake and defocus) and ``light_rain``, from the same
seeds: the heavy row is the target, the second row shows what the model does to the blur or
rain most photos have.

One command per task::

    python benchmarks/eval_synthetic.py --task deblur --weights /work/runs/deblur-dim32/ema.safetensors \\
        [--sets Kodak24,McMaster18] [--limit N] [--markdown deblur.md] [--save-examples DIR]

Without ``--weights`` (and no published model for the task) only the degraded inputs are
scored, which documents how hard each setting is. Reported: PSNR / SSIM (RGB, 8-bit) of the
degraded input and of the output, the gain, and seconds per megapixel of the network (float32,
whole image reflect-padded to a multiple of 32, as the literature protocol of eval_denoise.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared CPU: see eval_common.py

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_common import (  # noqa: E402
    DATASETS,
    Meter,
    Timer,
    environment_line,
    list_images,
    load_network,
    load_rgb,
    markdown_table,
    run_network,
    to_tensor,
    to_uint8,
)

import torch  # noqa: E402

from training.degradations import HELD_OUT_SEED_BASE, degrade, light_rain, moderate_blur  # noqa: E402

PAIRED = {"derain": ["Rain100H"]}
HELD_OUT = "synthetic (held-out)"
#: Further synthetic rows per task (label -> fn(clean, generator)), drawn from the same held-out
#: seeds: the heavy held-out setting is the target, the milder one is what most photos have.
EXTRA_SYNTHETIC = {
    "deblur": {"synthetic (moderate)": moderate_blur},
    "derain": {"synthetic (light)": light_rain},
}


def set_offset(set_name: str) -> int:
    """Stable per-set seed offset, so image i of Kodak24 and of McMaster18 get different draws."""
    return (zlib.crc32(set_name.encode()) % 100_000) * 1_000


def synthetic_input(task: str, kind: str, clean: np.ndarray, set_name: str, index: int) -> np.ndarray:
    """The degraded uint8 image for (row kind, set, index): reproducible from the seed alone."""
    g = torch.Generator().manual_seed(HELD_OUT_SEED_BASE + set_offset(set_name) + index)
    x = to_tensor(clean)
    y = degrade(task, x, g, held_out=True) if kind == HELD_OUT else EXTRA_SYNTHETIC[task][kind](x, g)
    return to_uint8(y)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--task", required=True, choices=["deblur", "derain", "dehaze"])
    p.add_argument("--weights", help="LIR .safetensors (default: lir's published model for the task, if any)")
    p.add_argument("--sets", default="Kodak24,McMaster18", help="clean sets degraded synthetically")
    p.add_argument("--no-paired", action="store_true", help="skip the real paired set (Rain100H for derain)")
    p.add_argument("--limit", type=int, default=0, help="first N images per set (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=str(DATASETS))
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--json", help="also write the numbers to this file")
    p.add_argument("--save-examples", metavar="DIR", help="write input/output/target PNGs of the first 2 images per set")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    notes: list[str] = []
    model, name, meta = None, "(inputs only)", {}
    try:
        model, name, meta = load_network(a.weights, a.task)
    except (SystemExit, ValueError, OSError) as exc:
        if a.weights:
            raise
        notes.append(f"no model evaluated ({exc}); only the degraded inputs are scored")
    if meta.get("task") and meta["task"] != a.task:
        notes.append(f"checkpoint metadata says task {meta['task']!r}, evaluated on {a.task!r}")
    ex_dir = Path(a.save_examples) if a.save_examples else None
    if ex_dir:
        ex_dir.mkdir(parents=True, exist_ok=True)

    rows_in: list[tuple[str, str, Meter, Meter]] = []
    t0 = time.time()
    kinds = [HELD_OUT, *EXTRA_SYNTHETIC.get(a.task, {})]
    jobs = [(s, k) for k in kinds for s in a.sets.split(",") if s]
    if not a.no_paired:
        jobs += [(s, "real paired") for s in PAIRED.get(a.task, [])]
    for set_name, kind in jobs:
        if kind == "real paired":
            files = list_images(Path(a.data) / "paired" / set_name / "input")
        else:
            files = list_images(Path(a.data) / set_name)
        if a.limit:
            files = files[: a.limit]
        mi, mo = Meter(), Meter()
        for i, f in enumerate(files):
            if kind == "real paired":
                inp, clean = load_rgb(f), load_rgb(f.parent.parent / "target" / f.name)
            else:
                clean = load_rgb(f)
                inp = synthetic_input(a.task, kind, clean, set_name, i)
            mi.add(inp, clean)
            out = None
            if model is not None:
                with Timer() as t:
                    out = to_uint8(run_network(model, to_tensor(inp)))
                mo.add(out, clean, t.s)
            if ex_dir and i < 2:
                stem = f"{a.task}_{set_name}_{kind.split()[-1].strip('()')}_{f.stem}"
                Image.fromarray(inp).save(ex_dir / f"{stem}_input.png")
                Image.fromarray(clean).save(ex_dir / f"{stem}_target.png")
                if out is not None:
                    Image.fromarray(out).save(ex_dir / f"{stem}_output.png")
        rows_in.append((set_name, kind, mi, mo))
        print(f"{set_name} ({kind}): input {mi.cell()}, output {mo.cell()} (n={mi.n})", flush=True)

    header = ["set", "degradation", "n", "input PSNR / SSIM", "output PSNR / SSIM", "gain (dB)", "s/MP"]
    rows = []
    for set_name, kind, mi, mo in rows_in:
        gain = f"{np.mean(mo.psnr) - np.mean(mi.psnr):+.2f}" if mo.n else "–"
        rows.append([set_name, kind, str(mi.n), mi.cell(), mo.cell(), gain, mo.s_per_mp()])
    md = [f"## {a.task}: `{Path(name).name}`", ""]
    if meta:
        md += [f"Checkpoint: task {meta.get('task')}, config {meta.get('config')}, steps {meta.get('steps')}", ""]
    md += [f"Synthetic rows: `training/degradations.py`, `held_out=True` ({a.task}), seed per image "
           f"`HELD_OUT_SEED_BASE + offset(set) + index`"
           + "".join(f"; {k}: `{fn.__name__}`" for k, fn in EXTRA_SYNTHETIC.get(a.task, {}).items())
           + ". PSNR (dB) / SSIM, RGB, 8-bit.", ""]
    md.append(markdown_table(header, rows))
    md += ["", f"_{environment_line(a.threads)}; {time.time() - t0:.0f} s in all._"]
    md += [f"_Note: {n}_" for n in notes]
    text = "\n".join(md)
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "task": a.task, "weights": name, "metadata": meta, "notes": notes,
            "rows": [{"set": s, "kind": k, "input": mi.summary(), "output": mo.summary()} for s, k, mi, mo in rows_in],
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
