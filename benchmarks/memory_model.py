"""Measure the LIR network's peak activation memory per pixel on the CPU (for lir/devices.py).

Each (config, size, dtype) runs in a fresh subprocess: build the network with random weights, make
the input, reset the peak-RSS counter (``echo 5 > /proc/self/clear_refs``, Linux), run one forward
pass under ``torch.inference_mode()``, and report (VmHWM − VmRSS before) / pixels.

    python benchmarks/memory_model.py                # small and default config, 256², 384², 512²
    python benchmarks/memory_model.py --sizes 256 --dims 16

Prints a markdown table and the least-squares fit  bytes/pixel = itemsize·(slope·dim + intercept)
that lir/devices.py uses (rounded up there).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, torch
from lir.network import LIR
dim, blocks, size, dtype = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), getattr(torch, sys.argv[4])
torch.set_num_threads(2)
if blocks == "small":
    net = LIR(dim=dim, left_blk_num=(1, 1), bottom_blk_num=1, right_blk_num=(1, 1))
else:
    net = LIR(dim=dim)
net = net.eval().to(dtype)
x = torch.rand(1, 3, size, size).to(dtype)
def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
with torch.inference_mode():
    net(torch.rand(1, 3, 128, 128).to(dtype))  # warm up: one-time allocations are not activations
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    y = net(x)
    peak = status("VmHWM:")
print(json.dumps({"growth": peak - before}))
"""


def measure(dim: int, blocks: str, size: int, dtype: str) -> float:
    """Peak RSS growth per pixel of one forward pass, in bytes."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(dim), blocks, str(size), dtype],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["growth"] / (size * size)


def main() -> None:
    """Run the measurements and print the table and the linear fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512])
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 48])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    itemsize = 4 if args.dtype == "float32" else 2
    rows = []
    print("| config | size | bytes/pixel | bytes/pixel/itemsize |")
    print("|---|---|---|---|")
    for dim in args.dims:
        blocks = "small" if dim != 48 else "default"
        for size in args.sizes:
            bpp = measure(dim, blocks, size, args.dtype)
            rows.append((dim, bpp / itemsize))
            print(f"| dim {dim} ({blocks}) | {size}² | {bpp:.0f} | {bpp / itemsize:.1f} |", flush=True)
    if len({d for d, _ in rows}) >= 2:
        n = len(rows)
        mx = sum(d for d, _ in rows) / n
        my = sum(v for _, v in rows) / n
        slope = sum((d - mx) * (v - my) for d, v in rows) / sum((d - mx) ** 2 for d, _ in rows)
        print(f"\nfit: bytes/pixel = itemsize * ({slope:.2f} * dim + {my - slope * mx:.1f})")
        print(f"max over rows of (value - fit): {max(v - (slope * d + my - slope * mx) for d, v in rows):.1f}")


if __name__ == "__main__":
    main()
