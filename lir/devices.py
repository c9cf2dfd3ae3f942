"""Choosing the device and precision, and predicting how much memory a tile needs.

`pick_device` and `pick_dtype` turn the user's `device=` / `dtype=` (or their absence) into a concrete
`torch.device` and `torch.dtype`, refusing combinations the network does not support.
`memory_budget` says how many bytes the network's activations may use on a device, and
`activation_bytes` predicts the peak activation memory of one forward pass, so that
`tile="auto"` can pick the largest tile that fits.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

__all__ = [
    "DeviceLike",
    "DtypeLike",
    "pick_device",
    "pick_dtype",
    "memory_budget",
    "available_ram",
    "activation_bytes",
    "bytes_per_pixel",
    "predicted_seconds",
]

DeviceLike = Union[str, torch.device, None]
"""What `device=` accepts: ``None`` (pick the best available), a name such as ``"cuda:1"``, or a `torch.device`."""
DtypeLike = Union[str, torch.dtype, None]
"""What `dtype=` accepts: ``None`` (pick per device), a name such as ``"bfloat16"``, or a `torch.dtype`."""

_DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
    "double": torch.float64,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}

# What the network supports on each device type (see lir.network.LIR): half precision is a CUDA
# speed option; CPU has fast bfloat16 kernels but no usable float16 ones; MPS has no float64 and its
# half-precision kernels were not validated here, so it stays in float32.
_SUPPORTED = {
    "cuda": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
    "cpu": (torch.float32, torch.float64, torch.bfloat16),
    "mps": (torch.float32,),
}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(device: DeviceLike = None) -> torch.device:
    """Resolve ``device=`` to a concrete `torch.device`.

    Args:
        device: ``None`` picks CUDA if available, then Apple MPS, then the CPU. A string
            (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) or a `torch.device` is checked and
            returned; ``"cuda"`` without an index becomes the current CUDA device, so that equal
            devices compare (and cache) equal.

    Raises:
        ValueError: the name is not a device, the device type is not supported, or it is not
            available on this machine.
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be None, a string or a torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'") from exc
    if dev.type not in _SUPPORTED:
        raise ValueError(f"unsupported device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available in this PyTorch build/machine")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {device!r} requested but Apple MPS is not available")
        return torch.device("mps")
    return torch.device("cpu")


def _parse_dtype(dtype: DtypeLike) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in _DTYPE_NAMES:
            return _DTYPE_NAMES[key]
    raise ValueError(
        f"unknown dtype {dtype!r}; use one of float32, float64, bfloat16, float16 (or a torch.dtype)"
    )


def pick_dtype(device: DeviceLike, dtype: DtypeLike = None) -> torch.dtype:
    """Resolve ``dtype=`` for a device.

    Args:
        device: where the network will run (anything `pick_device` accepts).
        dtype: ``None`` picks bfloat16 on CUDA when the GPU supports it (else float16) and float32
            on the CPU and MPS (CPU bfloat16 is a speed option with visibly lower accuracy, so it
            is never the default). A `torch.dtype` or a name (``"bf16"``, ``"float32"``, ...).

    Raises:
        ValueError: an unknown name, or a precision the network does not support on that device
            (float32/float64 anywhere except float64 on MPS; bfloat16 on CPU and CUDA; float16
            on CUDA only).
    """
    dev = pick_device(device)
    want = _parse_dtype(dtype)
    if want is None:
        if dev.type == "cuda":
            with torch.cuda.device(dev):
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    supported = _SUPPORTED[dev.type]
    if want not in supported:
        names = ", ".join(str(d).removeprefix("torch.") for d in supported)
        raise ValueError(f"dtype {want} is not supported on {dev.type}; supported there: {names}")
    return want


# ---------------------------------------------------------------------------------------------
# Memory model
# ---------------------------------------------------------------------------------------------

# Peak activation memory of one inference forward pass, in bytes per input pixel, as a linear
# function of the channel width: bytes/pixel = itemsize * (_BPP_SLOPE * dim + _BPP_INTERCEPT).
# The depth of the configuration barely matters because inference frees each block's
# intermediates before the next block runs; the peak sits inside the widest full-resolution
# stage (EAA5/EAA1 at H×W with concatenations of 2·dim channels at H/2).
#
# Measured on CPU (torch 2.13, float32, torch.inference_mode, 2 threads) as the growth of peak
# RSS (VmHWM after resetting it through /proc/self/clear_refs) during one forward pass with random
# weights, small config (dim 16, one block per stage) and default config (dim 48); command:
#
#     python benchmarks/memory_model.py --sizes 256 384 512 768 --dims 16 48
#
#     config      256²   384²   512²   768²    (bytes per pixel / 4)
#     dim 16      240    298    217    195
#     dim 48      824    923    620    624
#
# The spread comes from the C allocator (glibc keeps freed blocks mapped after its mmap threshold
# adapts), so the model takes the upper envelope, itemsize · (20·dim + 16), i.e. 3.9 KB per pixel
# for the default model in float32; callers keep a further margin (`_BUDGET_FRACTION`), because
# allocator fragmentation and cuDNN workspaces come on top on a GPU.
_BPP_SLOPE = 20.0
_BPP_INTERCEPT = 16.0
# Fixed overhead per forward pass (allocator slack; the weights are accounted separately).
_FIXED_OVERHEAD = 32 * 2**20

# Fractions of the free memory that tile="auto" lets the activations use: the rest is left for
# the image and output canvas (on CPU), other processes, and fragmentation.
_BUDGET_FRACTION = {"cuda": 0.7, "cpu": 0.5, "mps": 0.5}
# On the CPU a bigger tile is not faster per pixel (the network's cost is linear in pixels), so
# the activation budget is capped: this keeps a 4000×3000 restore within ~2 GB of RSS.
CPU_BUDGET_CAP = 1 * 2**30


def bytes_per_pixel(dim: int, dtype: torch.dtype = torch.float32) -> float:
    """Predicted peak activation bytes per input pixel of one forward pass of an LIR of width ``dim``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return itemsize * (_BPP_SLOPE * dim + _BPP_INTERCEPT)


def activation_bytes(height: int, width: int, *, dim: int, dtype: torch.dtype, batch: int = 1) -> int:
    """Predicted peak memory in bytes of one forward pass over a ``batch``×3×``height``×``width`` input."""
    return int(batch * height * width * bytes_per_pixel(dim, dtype)) + _FIXED_OVERHEAD


def _meminfo_available() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux), in bytes; None elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_available() -> Optional[int]:
    """Free physical pages × page size (POSIX fallback); None when the platform has no such sysconf."""
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    if pages <= 0 or size <= 0:
        return None
    return int(pages) * int(size)


def available_ram() -> int:
    """Bytes of RAM available to this process without swapping (best effort, no psutil)."""
    for probe in (_meminfo_available, _sysconf_available):
        value = probe()
        if value:
            return value
    # Unknown platform (e.g. Windows without psutil): assume a modest machine rather than fail.
    return 4 * 2**30


def memory_budget(device: DeviceLike) -> int:
    """Bytes that one forward pass's activations may use on ``device``.

    CUDA: a fraction of the memory `torch.cuda.mem_get_info` reports free. CPU: a fraction of
    the available RAM (/proc/meminfo MemAvailable, else sysconf), capped at `CPU_BUDGET_CAP`.
    MPS: a fraction of the recommended working set minus what the driver already holds, else
    of the available RAM.
    """
    dev = pick_device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free * _BUDGET_FRACTION["cuda"])
    if dev.type == "mps":
        mps = getattr(torch, "mps", None)
        try:
            limit = mps.recommended_max_memory() - mps.driver_allocated_memory()  # type: ignore[union-attr]
        except (AttributeError, RuntimeError):
            limit = available_ram()
        return int(max(limit, 0) * _BUDGET_FRACTION["mps"])
    return int(min(available_ram() * _BUDGET_FRACTION["cpu"], CPU_BUDGET_CAP))


# Rough CPU speed of the default configuration (dim 48, 7.3 M parameters) in float32 on the
# 2-core development machine, used only to decide whether a job is long enough for a progress
# bar: `python benchmarks/bench_network.py` measured 6.8 s for 512² (26 s per megapixel).
_CPU_SECONDS_PER_MEGAPIXEL_DEFAULT = 26.0
_DEFAULT_PARAMETERS = 7_310_915


def predicted_seconds(pixels: int, *, parameters: int, device: torch.device) -> float:
    """A rough guess of the run time of ``pixels`` through a network of ``parameters`` weights.

    Only used to decide whether to show a progress bar; on accelerators it returns 0 (fast).
    """
    if device.type != "cpu":
        return 0.0
    return pixels / 1e6 * _CPU_SECONDS_PER_MEGAPIXEL_DEFAULT * parameters / _DEFAULT_PARAMETERS
