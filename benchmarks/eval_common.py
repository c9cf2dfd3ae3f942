"""Shared pieces of the evaluation scripts (``eval_denoise.py``, ``eval_synthetic.py``).

Metrics follow the image-restoration literature: RGB, 8-bit, the whole image (no border
shaved), averaged per image then over the set.

- PSNR: ``10·log10(255² / MSE)`` on uint8 images.
- SSIM (Wang et al. 2004): 11×11 Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255,
  "valid" filtering (no padding, as the reference MATLAB code), computed per RGB channel and
  averaged. Written here (float64, separable convolution in torch) so evaluation needs no
  scikit-image.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting: on a shared, oversubscribed CPU the default spin-waiting threads of
# a 2-thread torch job fight the other processes for the cores; measured here under load, one
# dim-32 training step took 7-30 s spinning and 2.1 s passive. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing lir
    sys.path.insert(0, str(REPO))

# The team's research copies sit beside the checkout (../shared/datasets); LIR_DATASETS overrides.
DATASETS = Path(os.environ.get("LIR_DATASETS", REPO.parent / "shared" / "datasets"))
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


# ------------------------------------------------------------------------------------ images


def _natural_key(p: Path) -> tuple:
    """Sort "2.png" before "10.png" (Rain100H); plain names sort as usual."""
    stem = p.stem
    return (0, int(stem), "") if stem.isdigit() else (1, 0, p.name)


def list_images(folder: str | Path) -> list[Path]:
    files = sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS), key=_natural_key)
    if not files:
        raise SystemExit(f"no images in {folder}")
    return files


def load_rgb(path: str | Path) -> np.ndarray:
    """H×W×3 uint8 (grayscale files are repeated to 3 channels)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 -> float32 1×3×H×W in [0, 1]."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float 1×3×H×W -> uint8 H×W×3, clipped and rounded (as saving a PNG would)."""
    return torch.round(x[0].clamp(0, 1) * 255.0).to(torch.uint8).permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------ metrics


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (inf when identical)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _gauss_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two uint8 RGB images: per channel, standard constants, averaged over channels."""
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[:, None]  # C×1×H×W
    y = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1)[:, None]
    g = _gauss_window()
    gh, gv = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def filt(z: torch.Tensor) -> torch.Tensor:  # separable, "valid"
        return F.conv2d(F.conv2d(z, gh), gv)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean(dim=(1, 2, 3)).mean())


# ------------------------------------------------------------------------------------ model


def load_network(weights: str | None, task: str, threads: int | None = None):  # -> (LIR, name, metadata)
    """The LIR network for ``weights`` (a safetensors path) or the task's published model.

    The config comes from the file's metadata (``config``) or, failing that, from the tensor
    shapes. Returned in eval mode, fp32, channels_last (faster on CPU, same numbers).
    """
    from lir.network import LIR, LIRConfig, config_from_state_dict

    meta: dict[str, str] = {}
    if weights is None or not Path(weights).exists():
        try:
            from lir.weights import load_weights
        except ImportError as exc:  # pragma: no cover - depends on the package state
            raise SystemExit(f"--weights PATH is required (lir.weights not importable: {exc})")
        lw = load_weights(task, weights)
        cfg, sd, name = lw.config, lw.state_dict, lw.name
    else:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(weights), "pt") as f:
            meta = dict(f.metadata() or {})
        sd = load_file(str(weights))
        cfg = LIRConfig.from_dict(json.loads(meta["config"])) if "config" in meta else config_from_state_dict(sd)
        name = str(weights)
    model = LIR.from_config(cfg)
    model.load_state_dict(sd)
    model.eval().to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, name, meta


def pad_and_crop() -> tuple[Callable, Callable]:
    """lir's reflect padding to a valid size (and crop back), or a local equivalent."""
    try:
        from lir.tiling import crop, pad_to_valid

        return pad_to_valid, crop
    except ImportError:  # pragma: no cover - lir.tiling is part of the package now
        def pad_to_valid(x: torch.Tensor, multiple: int = 32, min_size: int = 128):
            h, w = x.shape[-2:]
            ph = max(min_size, -(-h // multiple) * multiple)
            pw = max(min_size, -(-w // multiple) * multiple)
            return F.pad(x, (0, pw - w, 0, ph - h), mode="reflect"), (h, w)

        def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
            return x[..., : size[0], : size[1]]

        return pad_to_valid, crop


@torch.no_grad()
def run_network(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The literature protocol's forward: float32, whole image, reflect-padded to a valid size."""
    pad, crop = pad_and_crop()
    xp, size = pad(x)
    out = model(xp.contiguous(memory_format=torch.channels_last))
    return crop(out, size).contiguous()


def user_restore() -> Callable | None:
    """``lir.restore`` if the package exports it (else ``lir.restorer.restore``), else None."""
    try:
        from lir import restore  # type: ignore[attr-defined]

        return restore
    except ImportError:
        try:
            from lir.restorer import restore

            return restore
        except ImportError:
            return None


# ------------------------------------------------------------------------------------ bookkeeping


@dataclass
class Meter:
    """Per-image PSNR/SSIM and timing of one method on one (set, setting)."""

    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    seconds: float = 0.0
    megapixels: float = 0.0

    def add(self, out: np.ndarray, ref: np.ndarray, seconds: float = 0.0, with_ssim: bool = True) -> None:
        self.psnr.append(psnr(out, ref))
        if with_ssim:
            self.ssim.append(ssim(out, ref))
        self.seconds += seconds
        self.megapixels += ref.shape[0] * ref.shape[1] / 1e6

    @property
    def n(self) -> int:
        return len(self.psnr)

    def cell(self) -> str:
        if not self.psnr:
            return "–"
        s = f"{np.mean(self.psnr):.2f}"
        if self.ssim:
            s += f" / {np.mean(self.ssim):.4f}"
        return s

    def s_per_mp(self) -> str:
        return f"{self.seconds / self.megapixels:.2f}" if self.megapixels and self.seconds else "–"

    def summary(self) -> dict:
        return {
            "n": self.n,
            "psnr": float(np.mean(self.psnr)) if self.psnr else None,
            "ssim": float(np.mean(self.ssim)) if self.ssim else None,
            "s_per_mp": self.seconds / self.megapixels if self.megapixels and self.seconds else None,
        }


class Timer:
    def __enter__(self) -> "Timer":
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.t


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo, else ``platform.processor()``)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_line(threads: int) -> str:
    # s/MP figures differ by CPU family (AMX or not) far more than by torch version: name it.
    return (f"torch {torch.__version__}, {threads} threads, {cpu_name()}, "
            f"load average {os.getloadavg()[0]:.2f} at the end")
