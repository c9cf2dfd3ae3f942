"""onnxruntime (CPU) against PyTorch (CPU) on the same model and input, float32, in one run.

    python benchmarks/bench_onnx.py                                   # bundled denoiser, 512², 2 threads
    python benchmarks/bench_onnx.py --weights runs/denoise/ema.safetensors --size 1024 --repeats 3
    python benchmarks/bench_onnx.py --onnx lir-denoise.onnx           # reuse a file from `lir export-onnx`

The model is exported with `lir.export_onnx` (unless --onnx is given; the file must hold the same
weights). PyTorch runs the network as `lir` does on a CPU (fast form, channels_last); onnxruntime
runs the graph with all its graph optimisations. Both get the same thread count and the same random
N×3×S×S input: one warm-up pass, then --repeats timed passes; best and median seconds per image.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch



def timed(fn: Callable[[], np.ndarray], repeats: int) -> tuple[list[float], np.ndarray]:
    out = fn()  # warm-up: allocations, kernel selection, onnxruntime's first-run planning
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
    return seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="denoise")
    parser.add_argument("--weights", help="checkpoint or model name (default: the task's published model)")
    parser.add_argument("--onnx", type=Path, help="an exported graph of the same weights (default: export now)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--batch", type=int, default=1, help="images per pass (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes after the warm-up (default 5)")
    args = parser.parse_args()

    import onnxruntime as ort

    import lir
    from lir.onnx_export import export_onnx

    torch.set_num_threads(args.threads)
    restorer = lir.load_model(args.task, weights=args.weights, device="cpu", dtype=torch.float32)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))

    with tempfile.TemporaryDirectory() as tmp:
        path = args.onnx
        if path is None:
            path = Path(tmp) / "model.onnx"
            report = export_onnx(path, args.task, weights=args.weights)
            checks = ", ".join(f"{'×'.join(map(str, c.shape))}: {c.max_abs_diff:.1e}" for c in report.checks)
            print(f"exported {report.model} in {report.seconds:.0f} s (opset {report.opset}); check {checks}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"input": x.numpy()}
        ort_seconds, ort_out = timed(lambda: session.run(["output"], feed)[0], args.repeats)

    x_cl = x.contiguous(memory_format=torch.channels_last)

    def torch_pass() -> np.ndarray:
        with torch.inference_mode():
            return restorer.network(x_cl).contiguous().numpy()

    torch_seconds, torch_out = timed(torch_pass, args.repeats)

    n = args.batch
    print(f"{restorer.name} ({restorer.config.dim} dim), {args.batch}×3×{args.size}×{args.size} float32, "
          f"{args.threads} threads, {args.repeats} timed passes after 1 warm-up; "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}")
    print("| runtime | best s / image | median s / image |")
    print("|---|---|---|")
    for name, seconds in (("PyTorch (lir's CPU form: fast, channels_last)", torch_seconds),
                          ("onnxruntime CPUExecutionProvider", ort_seconds)):
        print(f"| {name} | {min(seconds) / n:.3f} | {statistics.median(seconds) / n:.3f} |")
    ratio = statistics.median(torch_seconds) / statistics.median(ort_seconds)
    print(f"onnxruntime / PyTorch speed (medians): {ratio:.2f}×; "
          f"max abs diff of the outputs: {np.abs(ort_out - torch_out).max():.1e}")


if __name__ == "__main__":
    main()
