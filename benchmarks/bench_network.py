"""Speed of the network's two forms, side by side on the same weights and input (CPU).

    python benchmarks/bench_network.py            # default + light config, 256², 512², 1024²
    python benchmarks/bench_network.py --sizes 256 --configs light

Each (config, size, form) runs in its own process so that peak RSS belongs to that run alone.
Forms: `literal` (the spec-literal reference, NCHW, its fastest layout), `fast-nchw`, `fast`
(channels_last, what `lir` runs on CPU), `fast-bf16` (channels_last + bfloat16 weights and input).
Weights are random (speed does not depend on their values); every form loads the same ones.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    "default": {},
    "light": {"dim": 32, "left_blk_num": [1, 1], "bottom_blk_num": 1, "right_blk_num": [1, 1]},
}
FORMS = ("literal", "fast-nchw", "fast", "fast-bf16")


def child(config: str, size: int, form: str, threads: int, out: str) -> None:
    import torch
    from safetensors.torch import save_file

    from lir.network import LIR
    from lir.network.literal import literal_copy

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = LIR(**CONFIGS[config]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    if form == "literal":
        model = literal_copy(model)
    if form in ("fast", "fast-bf16"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if form == "fast-bf16":
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    repeats = {256: 3, 512: 2}.get(size, 1)
    with torch.inference_mode():
        y = model(x)  # warm-up: first-call allocations and oneDNN kernel selection
        start = time.perf_counter()
        for _ in range(repeats):
            y = model(x)
        seconds = (time.perf_counter() - start) / repeats
    save_file({"y": y.float().contiguous()}, out)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 1024])
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=4, metavar=("CONFIG", "SIZE", "FORM", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, size, form, out = args.child
        child(config, int(size), form, args.threads, out)
        return

    import torch
    from safetensors.torch import load_file

    print(f"torch {torch.__version__}, {args.threads} threads, float32 unless the form says otherwise")
    print("| config | size | form | s / image | MP/s | peak RSS (MB) | speed-up vs literal | max abs diff vs literal |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            for size in args.sizes:
                base: dict | None = None
                for form in args.forms:
                    out = str(pathlib.Path(tmp) / f"{config}-{size}-{form}.safetensors")
                    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--child", config, str(size), form, out]
                    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                    y = load_file(out)["y"]
                    if form == "literal":
                        base = {"seconds": result["seconds"], "y": y}
                    ratio = f"{base['seconds'] / result['seconds']:.2f}×" if base else "–"
                    diff = f"{(y - base['y']).abs().max().item():.1e}" if base else "–"
                    mp = size * size / 1e6 / result["seconds"]
                    print(
                        f"| {config} | {size}² | {form} | {result['seconds']:.3f} | {mp:.3f} | {result['rss_mb']:.0f} "
                        f"| {ratio} | {diff} |",
                        flush=True,
                    )
    _ = resource  # parent's own RSS is not reported: each row is its own process


if __name__ == "__main__":
    main()
