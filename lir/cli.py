"""The ``lir`` command: ``lir restore``, ``lir models``, ``lir convert``, ``lir export-onnx`` (also
``python -m lir``).

Exit codes: 0 success; 1 when any file failed (each failure is one line on stderr, the others
are still restored), a model could not be loaded, or an exported graph failed its check; 2 for
usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Union

__all__ = ["main", "build_parser"]

_DTYPES = ("float32", "float64", "bfloat16", "float16")


def _tile_arg(text: str) -> Union[int, str, None]:
    """``--tile``: a number of pixels, ``auto`` or ``none``."""
    low = text.strip().lower()
    if low == "auto":
        return "auto"
    if low in ("none", "whole", "off"):
        return None
    try:
        return int(low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, 'auto' or 'none'; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lir`` command (exposed for documentation and tests)."""
    from lir import __version__
    from lir.manifest import TASKS

    parser = argparse.ArgumentParser(
        prog="lir",
        description="Restore degraded photos (noise, blur, rain, haze) with the LIR network.",
    )
    parser.add_argument("--version", action="version", version=f"lir {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    rp = sub.add_parser(
        "restore",
        help="restore image files or folders",
        description=(
            "Restore image files and folders. With one input file and an OUT that has an image "
            "extension, OUT is the output file (its extension picks the format); otherwise OUT is a "
            "folder (created if needed) and outputs keep their file names, and their sub-folders for "
            "folder inputs. 16-bit PNG/TIFF stay 16-bit; EXIF and ICC profile are kept."
        ),
    )
    rp.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders (searched recursively)")
    rp.add_argument("-o", "--output", required=True, metavar="OUT", help="output file or folder")
    rp.add_argument("--task", default="denoise", choices=TASKS, help="restoration task (default: denoise)")
    rp.add_argument("--weights", metavar="PATH", help="a .safetensors checkpoint or a model name (see `lir models`)")
    rp.add_argument("--tile", type=_tile_arg, default="auto", metavar="N|auto|none",
                    help="tile size in pixels (multiple of 32, >= 128), 'auto' (fit the device memory; default) "
                         "or 'none' (whole image at once)")
    rp.add_argument("--overlap", type=int, default=32, metavar="N", help="overlap between tiles in pixels (default 32)")
    rp.add_argument("--device", metavar="D", help="cpu, cuda, cuda:N or mps (default: best available)")
    rp.add_argument("--dtype", choices=_DTYPES,
                    help="precision (default: bfloat16/float16 on CUDA, float32 on CPU and MPS)")
    rp.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    rp.set_defaults(subparser=rp)

    sub.add_parser("models", help="list tasks and published models",
                   description="List every published model: task, whether it is the task's default, "
                               "whether its weights are bundled or in the download cache, its "
                               "configuration and its key measured metric.")

    cp = sub.add_parser(
        "convert",
        help="convert an authors' checkpoint (.pth) to safetensors",
        description="Convert a checkpoint from the LIR authors' release (a BasicSR .pth pickle, read "
                    "safely with weights_only=True) to an lir .safetensors file, and print its manifest "
                    "entry as JSON.",
    )
    cp.add_argument("source", metavar="AUTHORS.pth", help="the authors' checkpoint")
    cp.add_argument("dest", metavar="OUT.safetensors", help="where to write the converted weights")
    cp.add_argument("--params-key", choices=("params", "params_ema"),
                    help="which weights to take from the checkpoint (default: the one present; "
                         "params_ema when both are)")
    cp.add_argument("--task", choices=TASKS, help="task to record in the printed manifest entry")

    from lir.onnx_export import DEFAULT_OPSET, TOLERANCE  # no onnx import: that waits for the command

    op = sub.add_parser(
        "export-onnx",
        help="export a model to ONNX (dynamic batch, height and width)",
        description="Export a model to ONNX: float32 N×3×H×W in [0, 1] in and out, dynamic batch, height and "
                    "width (multiples of 32, at least 128: pad other sizes, then crop). The graph is then run "
                    "with onnxruntime (CPU) at two sizes and compared with PyTorch; the command fails (exit 1) "
                    f"when the largest difference is above {TOLERANCE:g}. Needs the onnx extra: "
                    'pip install "lir-restore[onnx]".',
    )
    op.add_argument("dest", metavar="OUT.onnx", help="the ONNX file to write")
    op.add_argument("--task", default="denoise", choices=TASKS, help="restoration task (default: denoise)")
    op.add_argument("--weights", metavar="PATH", help="a .safetensors checkpoint or a model name (see `lir models`)")
    op.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                    help=f"ONNX opset (default {DEFAULT_OPSET}: onnxruntime's CPU and CUDA providers run it)")
    op.set_defaults(subparser=op)
    return parser


def _err(message: str) -> None:
    print(f"lir: {message}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- restore ----------------------------------------------------------------------------------


def _collect(inputs: Sequence[str], out_dir: Optional[Path]) -> tuple[list[tuple[Path, Path]], int]:
    """(source, relative output path) for every image, and the number of inputs that failed."""
    from lir.fileio import is_image_path

    jobs: list[tuple[Path, Path]] = []
    failed = 0
    skip = out_dir.resolve() if out_dir is not None else None
    for text in inputs:
        path = Path(text)
        if path.is_file():
            jobs.append((path, Path(path.name)))
        elif path.is_dir():
            found = []
            for root, dirs, files in os.walk(path):
                root_path = Path(root)
                # Never read our own outputs back when OUT lies inside an input folder.
                dirs[:] = sorted(d for d in dirs if skip is None or (root_path / d).resolve() != skip)
                found.extend(root_path / f for f in sorted(files) if is_image_path(f) and not f.startswith("."))
            if not found:
                _err(f"{path}: no image files in this folder")
            jobs.extend((f, f.relative_to(path)) for f in found)
        else:
            _err(f"failed: {path}: no such file or folder")
            failed += 1
    return jobs, failed


def _restore_file(restorer, src: Path, dst: Path, args: argparse.Namespace) -> None:
    import numpy as np

    from lir.fileio import read_image, write_image

    image = read_image(src)
    progress = False if args.quiet else None
    pixels = image.pixels
    if isinstance(pixels, np.ndarray) and pixels.ndim == 3 and pixels.shape[2] == 2:
        # 16-bit gray + alpha: restore the gray plane, keep the alpha as it was.
        gray = restorer(np.ascontiguousarray(pixels[:, :, 0]), tile=args.tile, tile_overlap=args.overlap,
                        progress=progress)
        result = np.stack([gray, pixels[:, :, 1]], axis=2)
    else:
        result = restorer(pixels, tile=args.tile, tile_overlap=args.overlap, progress=progress)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_image(dst, result, exif=image.exif, icc_profile=image.icc_profile, dpi=image.dpi)


def _cmd_restore(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lir.devices import pick_device, pick_dtype
    from lir.fileio import IMAGE_EXTENSIONS
    from lir.restorer import _check_tile, load_model

    try:
        _check_tile(args.tile, args.overlap, names=("--tile", "--overlap"))
        device = pick_device(args.device)
        dtype = pick_dtype(device, args.dtype)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))  # exits with 2

    out = Path(args.output)
    single = (
        len(args.inputs) == 1
        and Path(args.inputs[0]).is_file()
        and out.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not single and out.exists() and not out.is_dir():
        parser.error(f"-o {out}: must be a folder when restoring several files or a folder (it is a file)")
    jobs, failed = _collect(args.inputs, None if single else out)
    if not jobs:
        return 1 if failed else 0

    try:
        restorer = load_model(args.task, weights=args.weights, device=device, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - any load failure ends the command with one line
        _err(f"cannot load the model: {_one_line(exc)}")
        return 1
    if not args.quiet:
        _err(f"model {restorer.name} on {restorer.device} ({str(restorer.dtype).removeprefix('torch.')})")

    written: dict[Path, Path] = {}
    for src, rel in jobs:
        dst = out if single else out / rel
        try:
            key = dst.resolve()
            if key == src.resolve():
                raise ValueError("the output would overwrite the input; choose another -o")
            if key in written:
                raise ValueError(f"same output file as {written[key]}; restore these inputs separately")
            written[key] = src
            start = time.perf_counter()
            _restore_file(restorer, src, dst, args)
            if not args.quiet:
                _err(f"{src} -> {dst} ({time.perf_counter() - start:.1f} s)")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one line per failed file, then carry on
            _err(f"failed: {src}: {_one_line(exc)}")
            failed += 1
    return 1 if failed else 0


# -- models / convert ---------------------------------------------------------------------------


def _config_text(config) -> str:
    left, right = config.left_blk_num, config.right_blk_num
    return f"dim {config.dim}, blocks {left[0]},{left[1]}/{config.bottom_blk_num}/{right[0]},{right[1]}"


def _cmd_models(args: argparse.Namespace) -> int:
    from lir.manifest import TASKS, list_models, load_manifest

    models = list_models()
    manifest = load_manifest()
    rows = [("name", "task", "default", "weights", "config", "key metric")]
    for m in models:
        where = ", ".join(w for w, on in (("bundled", m.bundled), ("cached", m.cached)) if on) or "download"
        metric = next(iter(m.metrics.items()), None)
        rows.append((m.name, m.task, "yes" if m.is_default else "", where, _config_text(m.config),
                     f"{metric[0]}: {metric[1]}" if metric else ""))
    if models:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    else:
        print("no published models yet")
    status = []
    for task in TASKS:
        name = manifest.defaults.get(task)
        status.append(f"{task} ({name})" if name else f"{task} (no model yet; pass --weights)")
    print("tasks: " + ", ".join(status))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from lir.checkpoint import convert_checkpoint
    from lir.manifest import format_entry

    try:
        entry = convert_checkpoint(args.source, args.dest, params_key=args.params_key, task=args.task)
    except Exception as exc:  # noqa: BLE001 - report in one line, exit 1
        _err(f"convert failed: {_one_line(exc)}")
        return 1
    print(format_entry(Path(args.dest).stem, entry))
    return 0


def _cmd_export_onnx(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lir.onnx_export import _check_opset, _import_onnx_runtime, export_onnx

    dest = Path(args.dest)
    if dest.is_dir():
        parser.error(f"{dest} is a folder; give the .onnx file to write")
    try:
        _import_onnx_runtime()
    except ImportError as exc:
        _err(str(exc))
        return 1
    try:
        _check_opset(args.opset)
    except ValueError as exc:
        parser.error(f"--opset: {exc}")
    _err(f"exporting {args.weights or f'the {args.task} model'} to {dest} (opset {args.opset}); this takes a minute")
    try:
        report = export_onnx(dest, args.task, weights=args.weights, opset=args.opset)
    except Exception as exc:  # noqa: BLE001 - a missing extra, bad weights or an exporter failure: one line
        _err(f"export failed: {_one_line(exc)}")
        return 1
    size_mb = report.path.stat().st_size / 1e6
    print(f"{report.path}: {report.model}, opset {report.opset}, {size_mb:.1f} MB, exported in {report.seconds:.0f} s")
    print("onnxruntime (CPU) vs PyTorch, float32:")
    for check in report.checks:
        print(f"  {'×'.join(map(str, check.shape))}: max abs diff {check.max_abs_diff:.2e}")
    if not report.passed:
        _err(f"check failed: max abs diff {report.max_abs_diff:.2e} > {report.tolerance:g}")
        return 1
    print(f"passed (max abs diff <= {report.tolerance:g})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``lir`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "restore":
        return _cmd_restore(args, args.subparser)
    if args.command == "models":
        return _cmd_models(args)
    if args.command == "export-onnx":
        return _cmd_export_onnx(args, args.subparser)
    return _cmd_convert(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
