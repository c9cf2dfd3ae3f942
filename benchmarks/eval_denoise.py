#!/usr/bin/env python
"""Gaussian colour denoising benchmark of an LIR checkpoint, with CBM3D measured alongside.

One command::

    python benchmarks/eval_denoise.py --weights /work/runs/denoise-dim32/ema.safetensors \\
        --markdown denoise.md [--sets CBSD68,Kodak24,McMaster18] [--sigmas 15,25,50] \\
        [--limit N] [--cbm3d-subset N] [--threads 2]

Protocols (PSNR / SSIM, RGB, 8-bit, see ``eval_common.py``):

- **literature**: ``noisy = clean/255 + σ/255·n``, n ~ N(0, 1) from ``torch.Generator`` seeded
  with the image's index in its set (0-based, sets sorted by file name); float, *not* clipped
  or quantised. The network runs in float32 on the whole image, reflect-padded to a multiple of
  32 (``lir.tiling.pad_to_valid``) and cropped back; the output is clipped and rounded to 8 bits.
- **user**: the same noisy image clipped and quantised to uint8 (what a user's noisy photo is),
  restored by ``lir.restore(noisy_uint8, weights=PATH)`` (the package's own path: padding,
  tiling, dtype handling). Skipped with a note when ``lir.restore`` is not importable.
- **CBM3D** (``bm3d.bm3d_rgb(noisy, sigma_psd=σ/255)``, σ known — a non-blind baseline) on the
  literature noisy images, first ``--cbm3d-subset`` images per set (default all; 0 = skip).
- **PolyU** real camera noise (``paired/PolyU``, 100 pairs, ``*_real`` vs ``*_mean``): PSNR/SSIM of
  the input and of the network output (literature path). A Gaussian denoiser should at least
  not make it worse.

Speed is seconds per megapixel of image restored (model already loaded; single process,
``--threads`` threads), for each method. The CPU is shared: compare columns of one run.

Data: ``../shared/datasets`` (or $LIR_DATASETS) (CBSD68, Kodak24, McMaster18, paired/PolyU); see its README
for sources and the literature figures repeated in the output.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared CPU: see eval_common.py

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

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
    psnr,
    run_network,
    to_tensor,
    to_uint8,
    user_restore,
)

#: PSNR figures commonly quoted (Restormer, CVPR 2022, Gaussian colour denoising table), for context.
LITERATURE = {
    "CBM3D": {"CBSD68": (33.52, 30.71, 27.38), "Kodak24": (34.28, 31.68, 28.46), "McMaster18": (34.06, 31.66, 28.51)},
    "DnCNN": {"CBSD68": (33.90, 31.24, 27.95), "Kodak24": (34.60, 32.14, 28.95), "McMaster18": (33.45, 31.52, 28.62)},
    "FFDNet": {"CBSD68": (33.87, 31.21, 27.96), "Kodak24": (34.63, 32.13, 28.98), "McMaster18": (34.66, 32.35, 29.18)},
    "DRUNet": {"CBSD68": (34.30, 31.69, 28.51), "Kodak24": (35.31, 32.89, 29.86), "McMaster18": (35.40, 33.14, 30.08)},
    "Restormer": {"CBSD68": (34.39, 31.78, 28.59), "Kodak24": (35.44, 33.02, 30.00), "McMaster18": (35.55, 33.31, 30.29)},
}
LIT_SIGMAS = (15, 25, 50)


def noisy_literature(clean: np.ndarray, sigma: float, index: int) -> torch.Tensor:
    """Float noisy image (1×3×H×W, unclipped), noise seeded by the image's index."""
    g = torch.Generator().manual_seed(index)
    x = to_tensor(clean)
    return x + torch.randn(x.shape, generator=g, dtype=torch.float32) * (sigma / 255.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--weights", help="LIR .safetensors (default: lir's published denoise model)")
    p.add_argument("--sets", default="CBSD68,Kodak24,McMaster18")
    p.add_argument("--sigmas", default="15,25,50")
    p.add_argument("--limit", type=int, default=0, help="first N images per set (0 = all)")
    p.add_argument("--protocols", default="literature,user", help="comma list of literature,user")
    p.add_argument("--cbm3d-subset", type=int, default=-1, help="CBM3D on the first N images per set (-1 all, 0 skip)")
    p.add_argument("--polyu", type=int, default=-1, help="PolyU pairs to evaluate (-1 all, 0 skip; --limit also applies)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=str(DATASETS))
    p.add_argument("--markdown", help="also write the tables to this file")
    p.add_argument("--json", help="also write all numbers to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    sets = [s for s in a.sets.split(",") if s]
    sigmas = [float(s) for s in a.sigmas.split(",") if s]
    protocols = set(a.protocols.split(","))
    model, name, meta = load_network(a.weights, "denoise")
    restore = user_restore() if "user" in protocols else None
    notes = []
    if "user" in protocols and restore is None:
        notes.append("user protocol skipped: `lir.restore` is not importable yet")
        protocols.discard("user")
    bm3d = None
    if a.cbm3d_subset != 0:
        try:
            import bm3d  # evaluation-only dependency (training/requirements.txt)
        except ImportError:
            notes.append("CBM3D skipped: `pip install bm3d` (see training/requirements.txt)")

    results: dict[str, dict] = {}
    t_start = time.time()
    for set_name in sets:
        files = list_images(Path(a.data) / set_name)
        if a.limit:
            files = files[: a.limit]
        cleans = [load_rgb(f) for f in files]
        for sigma in sigmas:
            m = {k: Meter() for k in ("noisy", "literature", "user", "cbm3d")}
            for i, clean in enumerate(cleans):
                noisy = noisy_literature(clean, sigma, i)
                noisy_u8 = to_uint8(noisy)
                m["noisy"].add(noisy_u8, clean)
                if "literature" in protocols:
                    with Timer() as t:
                        out = run_network(model, noisy)
                    m["literature"].add(to_uint8(out), clean, t.s)
                if "user" in protocols:
                    with Timer() as t:
                        out_u = restore(noisy_u8, "denoise", weights=name)
                    m["user"].add(np.asarray(out_u), clean, t.s)
                if bm3d is not None and (a.cbm3d_subset < 0 or i < a.cbm3d_subset):
                    z = noisy[0].permute(1, 2, 0).double().numpy()
                    with Timer() as t:
                        den = bm3d.bm3d_rgb(z, sigma_psd=sigma / 255.0)
                    m["cbm3d"].add(to_uint8(torch.from_numpy(np.asarray(den)).permute(2, 0, 1)[None]), clean, t.s)
            key = f"{set_name}@{sigma:g}"
            results[key] = {k: v.summary() for k, v in m.items()}
            print(f"{key}: " + ", ".join(f"{k} {v.cell()} (n={v.n})" for k, v in m.items() if v.n), flush=True)

    polyu = None
    if a.polyu != 0:
        pin = Path(a.data) / "paired" / "PolyU" / "input"
        files = list_images(pin)
        n = len(files) if a.polyu < 0 else a.polyu
        if a.limit:
            n = min(n, a.limit)
        mi, mo = Meter(), Meter()
        for f in files[:n]:
            inp, tgt = load_rgb(f), load_rgb(pin.parent / "target" / f.name)
            mi.add(inp, tgt)
            with Timer() as t:
                out = run_network(model, to_tensor(inp))
            mo.add(to_uint8(out), tgt, t.s)
        polyu = {"input": mi.summary(), "output": mo.summary()}
        print(f"PolyU: input {mi.cell()}, output {mo.cell()} (n={mi.n})", flush=True)

    # ---- report
    has = {k: any(r[k]["n"] for r in results.values()) for k in ("literature", "user", "cbm3d")}
    header = ["set", "σ", "n", "noisy"]
    if has["literature"]:
        header += ["LIR literature", "s/MP"]
    if has["user"]:
        header += ["LIR user (uint8, lir.restore)", "s/MP"]
    if has["cbm3d"]:
        header += ["CBM3D (same noise)", "n", "s/MP"]
    header += ["CBM3D lit.", "Restormer lit."]
    rows = []
    for key, r in results.items():
        set_name, sigma = key.split("@")
        row = [set_name, sigma, str(r["noisy"]["n"]), f"{r['noisy']['psnr']:.2f} / {r['noisy']['ssim']:.4f}"]

        def cell(s: dict) -> str:
            return f"{s['psnr']:.2f} / {s['ssim']:.4f}" if s["n"] else "–"

        def spm(s: dict) -> str:
            return f"{s['s_per_mp']:.2f}" if s["s_per_mp"] else "–"

        if has["literature"]:
            row += [cell(r["literature"]), spm(r["literature"])]
        if has["user"]:
            row += [cell(r["user"]), spm(r["user"])]
        if has["cbm3d"]:
            row += [cell(r["cbm3d"]), str(r["cbm3d"]["n"]), spm(r["cbm3d"])]
        for method in ("CBM3D", "Restormer"):
            lit = LITERATURE[method].get(set_name)
            s = float(sigma)
            row.append(f"{lit[LIT_SIGMAS.index(int(s))]:.2f}" if lit and s in LIT_SIGMAS else "–")
        rows.append(row)
    md = [f"## Gaussian colour denoising: `{Path(name).name}`", ""]
    if meta:
        md.append(f"Checkpoint: task {meta.get('task')}, config {meta.get('config')}, steps {meta.get('steps')}"
                  + (f" (+ {json.loads(meta['started_from']).get('steps')} before)" if meta.get("started_from") else ""))
        md.append("")
    md.append("PSNR (dB) / SSIM, RGB, 8-bit. literature: float noise (seed = image index), not clipped; "
              "user: noisy image clipped + quantised to uint8, restored by `lir.restore`. "
              "`lit.`: figures quoted in the literature (full sets; for context).")
    md.append("")
    md.append(markdown_table(header, rows))
    if polyu:
        md += ["", "### PolyU real camera noise (input vs target)", "",
               markdown_table(["pairs", "input PSNR / SSIM", "LIR output PSNR / SSIM", "gain (dB)", "s/MP"],
                              [[str(polyu["input"]["n"]), f"{polyu['input']['psnr']:.2f} / {polyu['input']['ssim']:.4f}",
                                f"{polyu['output']['psnr']:.2f} / {polyu['output']['ssim']:.4f}",
                                f"{polyu['output']['psnr'] - polyu['input']['psnr']:+.2f}",
                                f"{polyu['output']['s_per_mp']:.2f}"]])]
    md += ["", f"_{environment_line(a.threads)}; {time.time() - t_start:.0f} s in all._"]
    md += [f"_Note: {n}_" for n in notes]
    text = "\n".join(md)
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps({"weights": name, "metadata": meta, "sets": results, "polyu": polyu,
                                            "notes": notes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
