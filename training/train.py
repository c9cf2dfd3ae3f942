#!/usr/bin/env python
"""Train an LIR network (``lir.network.LIR``) for one restoration task — the project's recipe.

Data: random crops of CBSD432 (the 432 photos of the Berkeley Segmentation Dataset BSDS500,
https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/resources.html, that are not
in CBSD68 — the usual colour-denoising training set), loaded once into memory as uint8, with
random flips and 90° rotations. Clean crops are degraded on the fly by the task's function in
``training/degradations.py``.

Recipe: L1 (or Charbonnier, or L1 + FFT) loss; AdamW (default lr 3e-4, weight decay 1e-4,
betas 0.9/0.999); linear warmup then cosine decay to ``--min-lr``; EMA of the weights (decay
warming up as (1+t)/(10+t) to ``--ema``); channels_last; optional bf16 autocast on CPU and AMP
on CUDA.

Outputs (in ``--out``; no pickles anywhere, so every file is safe to load):
    ema.safetensors    EMA weights in the authors' key layout + metadata (config, task, steps,
                       recipe, started_from, wall time, validation PSNR): what gets published;
    best.safetensors   the EMA weights with the best validation PSNR so far;
    state.safetensors  raw weights, EMA weights, AdamW moments, data-RNG state (tensors);
    state.json         step, arguments, scalar optimizer/scheduler state, wall time, best PSNR;
    log.jsonl          one JSON object per logged step / validation.

Examples::

    # continue the dim-32 warm start for denoising
    python training/train.py --task denoise --init-from ../shared/warmstart/denoise-dim32-bsds432.safetensors \\
        --out /work/runs/denoise-dim32 --steps 9000 --lr 2e-4 --warmup 100
    # resume exactly where it stopped (SIGTERM/SIGINT save first)
    python training/train.py --resume /work/runs/denoise-dim32
    # grow published weights into more EAA blocks per stage (same function at step 0)
    python training/train.py --task deblur --init-from lir/weights/lir-deblur-dim32.safetensors \\
        --config '{"dim": 32, "left_blk_num": [1, 2], "bottom_blk_num": 3, "right_blk_num": [1, 2]}' \\
        --out /work/runs/deblur-grown --steps 3000 --lr 2e-4 --warmup 100
    # a fresh small model
    python training/train.py --task deblur --dim 32 --blocks 1 --out /work/runs/deblur-dim32 --steps 20000

Validation (monitoring only, never used for training): the first 6 CBSD68 images (sorted by
name), centre-cropped to 256×256; for denoise σ = 25 float noise (seed = image index), for the
other tasks the held-out degradation of ``degradations.py``. The score is the PSNR of the EMA
model's output (clipped, 8-bit) against the clean crop.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting: on a shared, oversubscribed CPU the default spin-waiting threads of
# a 2-thread torch job fight the other processes for the cores; measured here under load, one
# dim-32 training step took 7-30 s spinning and 2.1 s passive. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import hashlib
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing lir
    sys.path.insert(0, str(REPO))

from lir.network import LIR, LIRConfig, config_from_state_dict  # noqa: E402
from training.degradations import DEGRADATIONS, DISTRIBUTIONS, add_noise, degrade, held_out_generator  # noqa: E402
from training.smooth_skies import paste_skies  # noqa: E402

# The team's research copies sit beside the checkout (../shared/datasets); LIR_DATASETS overrides.
DATASETS = Path(os.environ.get("LIR_DATASETS", REPO.parent / "shared" / "datasets"))
DEFAULT_DATA = str(DATASETS / "BSDS432")
DEFAULT_VAL = str(DATASETS / "CBSD68")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
STATE_VERSION = 1


# ------------------------------------------------------------------------------------ data


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder, sorted by name (the order "first N images" refers to)."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise SystemExit(f"no images in {folder}")
    return files


def load_uint8(path: Path) -> np.ndarray:
    """H×W×3 uint8 RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


class CropSampler:
    """Random square crops with the 8 flips/rotations, from images held in memory as uint8.

    All randomness comes from the given generator (the one the training state saves), so a
    resumed run draws the same crops as an uninterrupted one. Kept as uint8 (200 MB for
    CBSD432) and converted to float per batch: the batch is tiny next to the network step.
    """

    def __init__(self, folder: str | Path, min_side: int) -> None:
        self.paths = list_images(folder)
        self.images = [torch.from_numpy(load_uint8(p)) for p in self.paths]
        small = [p.name for p, im in zip(self.paths, self.images) if min(im.shape[:2]) < min_side]
        if small:
            raise SystemExit(f"{len(small)} training images smaller than the {min_side}px crop: {small[:3]}")

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch: int, patch: int, gen: torch.Generator) -> torch.Tensor:
        """A float32 batch ``batch×3×patch×patch`` in [0, 1]."""
        crops = []
        idx = torch.randint(0, len(self.images), (batch,), generator=gen)
        for i in idx.tolist():
            im = self.images[i]
            h, w = im.shape[:2]
            y = int(torch.randint(0, h - patch + 1, (), generator=gen))
            x = int(torch.randint(0, w - patch + 1, (), generator=gen))
            aug = int(torch.randint(0, 8, (), generator=gen))
            c = im[y : y + patch, x : x + patch].permute(2, 0, 1)
            if aug & 4:
                c = c.flip(-1)
            c = torch.rot90(c, aug & 3, dims=(-2, -1))
            crops.append(c)
        return torch.stack(crops).float().div_(255.0)


def make_validation(task: str, folder: str | Path, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed (clean, degraded) validation batch: the first ``count`` images, centre crops.

    CBSD68 is an evaluation set: it is used here only to monitor training and pick
    ``best.safetensors``, never as training data.
    """
    clean = []
    for p in list_images(folder)[:count]:
        im = torch.from_numpy(load_uint8(p)).permute(2, 0, 1)
        h, w = im.shape[-2:]
        if min(h, w) < size:
            raise SystemExit(f"validation image {p.name} is smaller than {size}px")
        t, l = (h - size) // 2, (w - size) // 2
        clean.append(im[:, t : t + size, l : l + size])
    clean_t = torch.stack(clean).float() / 255.0
    noisy = []
    for i in range(len(clean)):
        if task == "denoise":
            g = torch.Generator().manual_seed(i)
            noisy.append(add_noise(clean_t[i : i + 1], g, sigma=25.0))
        else:
            noisy.append(degrade(task, clean_t[i : i + 1], held_out_generator(i), held_out=True))
    return clean_t, torch.cat(noisy)


def psnr_8bit(out: torch.Tensor, clean: torch.Tensor) -> float:
    """Mean PSNR (dB) over the batch, output clipped and rounded to 8 bits as a saved image is."""
    o = torch.round(out.clamp(0, 1) * 255.0)
    c = torch.round(clean * 255.0)
    mse = ((o - c) ** 2).flatten(1).mean(1).double()
    return float((10 * torch.log10(255.0**2 / mse.clamp_min(1e-12))).mean())


# ------------------------------------------------------------------------------------ model / io


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file."""
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    return load_file(str(path)), meta


def config_of(sd: dict[str, torch.Tensor], meta: dict[str, str]) -> LIRConfig:
    """The checkpoint's config: from metadata when present (authoritative), else from shapes."""
    if "config" in meta:
        return LIRConfig.from_dict(json.loads(meta["config"]))
    return config_from_state_dict(sd)


# The parameters that close an EAA block's two branches: stage5's last ConvTranspose and
# `transpose`. Zeroed, the block returns its input exactly (out = 0 + res - 0).
_BLOCK_OUTPUTS = (".stage5.2.weight", ".transpose.weight")


def grown_state_dict(model: LIR, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` (a checkpoint of the same width and fewer EAA blocks per stage) laid into ``model``.

    Blocks present in ``sd`` keep their weights; the blocks ``model`` has in addition keep their
    fresh initialisation except for their two output convolutions, which start at zero, so each
    added block is an identity and the grown network computes exactly what ``sd`` computed.
    """
    target = model.state_dict()
    unknown = sorted(set(sd) - set(target))
    if unknown:
        raise SystemExit(f"--init-from has {len(unknown)} tensors the --config model lacks, e.g. {unknown[0]}")

    def block(key: str) -> str | None:  # "EAA2.1.stage1.0.x" -> "EAA2.1"; None outside the stages
        return ".".join(key.split(".")[:2]) if key.startswith("EAA") else None

    blocks_in_sd = {block(k) for k in sd}
    out = {}
    for k, v in target.items():
        if k in sd:
            if sd[k].shape != v.shape:
                raise SystemExit(f"--init-from {k} has shape {tuple(sd[k].shape)}, the --config model "
                                 f"{tuple(v.shape)}: growing keeps the width (dim)")
            out[k] = sd[k]
        elif block(k) is not None and block(k) not in blocks_in_sd:
            out[k] = torch.zeros_like(v) if k.endswith(_BLOCK_OUTPUTS) else v
        else:  # only whole added blocks may be missing, or a damaged file would train from noise
            raise SystemExit(f"--init-from lacks {k}, which is not part of an added EAA block")
    return out


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its 5×5 binomial blur (replicate padding), per channel: its edges and fine texture."""
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device, dtype=x.dtype) / 16
    k = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 5, 5)
    return x - F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=x.shape[1])


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def contiguous_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict()`` as contiguous CPU clones (channels_last weights cannot be saved as-is)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write via a temporary file and rename, so a kill mid-write never leaves a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ schedule


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Learning rate for (0-based) ``step``: linear warmup, then cosine from lr to min_lr."""
    if args.warmup > 0 and step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    span = max(1, args.steps - args.warmup)
    t = min(1.0, (step - args.warmup) / span)
    return args.min_lr + (args.lr - args.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def ema_decay_at(step: int, args: argparse.Namespace) -> float:
    """EMA decay, warming up as (1+t)/(10+t) to ``--ema`` for a fresh model.

    The warmup lets the EMA of a random initialisation follow the fast early progress. A run
    started from trained weights (``--init-from``) skips it by default (``--ema-warmup auto``):
    its EMA starts from the published weights and must not jump to the still-settling raw
    weights of a fresh optimizer.
    """
    warm = args.ema_warmup == "on" or (args.ema_warmup == "auto" and not args.init_from)
    return min(args.ema, (1.0 + step) / (10.0 + step)) if warm else args.ema


def parse_progressive(spec: str | None, patch: int, batch: int) -> list[tuple[int, int, int]]:
    """``"0:128:8,4000:160:6"`` -> [(start_step, patch, batch), ...] sorted by step."""
    if not spec:
        return [(0, patch, batch)]
    out = []
    for item in spec.split(","):
        parts = [int(x) for x in item.split(":")]
        if len(parts) == 2:
            parts.append(batch)
        if len(parts) != 3:
            raise SystemExit(f"bad --progressive item {item!r}; want STEP:PATCH[:BATCH]")
        out.append(tuple(parts))
    out.sort()
    if out[0][0] != 0:
        out.insert(0, (0, patch, batch))
    return out  # type: ignore[return-value]


def phase_at(step: int, phases: list[tuple[int, int, int]]) -> tuple[int, int]:
    cur = phases[0]
    for ph in phases:
        if step >= ph[0]:
            cur = ph
    return cur[1], cur[2]


def crop_schedule(phases: list[tuple[int, int, int]]) -> str:
    """``[(0, 128, 8), (6000, 256, 3)]`` -> ``"128x128 batch 8, from step 6000 256x256 batch 3"``."""
    return ", ".join(
        f"{'' if start == 0 else f'from step {start} '}{patch}x{patch} batch {batch}" for start, patch, batch in phases
    )


# ------------------------------------------------------------------------------------ training


class Trainer:
    """Holds model, EMA, optimizer, data and the bookkeeping needed to save and resume exactly."""

    def __init__(self, args: argparse.Namespace, resume_state: dict[str, Any] | None) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(args.device)
        self.phases = parse_progressive(args.progressive, args.patch, args.batch)
        for _, p, _ in self.phases:
            if p % 32 or p < 128:
                raise SystemExit(f"patch {p}: LIR needs multiples of 32 that are at least 128")

        # ---- model
        self.started_from = args.started_from if resume_state else None
        init_sd = None
        given_cfg = LIRConfig.from_dict(json.loads(args.config)) if args.config else None
        if args.init_from and not resume_state:
            init_sd, meta = read_safetensors(args.init_from)
            init_cfg = config_of(init_sd, meta)
            cfg = given_cfg or init_cfg
            self.started_from = {
                "file": Path(args.init_from).name,
                "sha256": sha256(args.init_from),
                "steps": meta.get("steps"),
                "task": meta.get("task"),
            }
            if cfg != init_cfg:
                self.started_from["grown_from_config"] = init_cfg.to_dict()
        else:
            cfg = given_cfg or LIRConfig(
                dim=args.dim,
                left_blk_num=(args.blocks, args.blocks),
                bottom_blk_num=args.blocks,
                right_blk_num=(args.blocks, args.blocks),
            )
        args.config = json.dumps(cfg.to_dict())
        args.started_from = self.started_from
        self.cfg = cfg
        torch.manual_seed(args.seed)  # initial weights of a fresh model
        self.model = LIR.from_config(cfg)
        if init_sd is not None:
            self.model.load_state_dict(grown_state_dict(self.model, init_sd))
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        # Compiled for training only (~1.3x per CPU step measured with bf16, training/bench_step.py);
        # the EMA copy and validation stay eager, and saved keys stay the plain module's.
        self.forward = torch.compile(self.model, dynamic=False) if args.compile else self.model
        self.ema = copy.deepcopy(self.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.param_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(
            self.params, lr=args.lr, betas=(args.beta1, args.beta2), weight_decay=args.wd
        )
        self.scaler = torch.amp.GradScaler("cuda") if (self.device.type == "cuda" and args.amp == "fp16") else None

        # ---- data
        self.gen = torch.Generator().manual_seed(args.seed)
        max_patch = max(p for _, p, _ in self.phases)
        t0 = time.time()
        self.data = CropSampler(args.data, max_patch)
        self.val_clean, self.val_noisy = make_validation(args.task, args.val_data, args.val_count, args.val_size)
        print(f"loaded {len(self.data)} training images from {args.data} in {time.time() - t0:.1f}s; "
              f"validation {tuple(self.val_noisy.shape)} from {args.val_data}", flush=True)

        # ---- bookkeeping
        self.step = 0
        self.wall = 0.0  # training seconds over all sessions (validation and saving included)
        self.best_psnr = -math.inf
        self.last_val: float | None = None
        if resume_state:
            self._load_state(resume_state)
        self.stop_signal: int | None = None

    # ---- persistence

    def _metadata(self, val_psnr: float | None) -> dict[str, str]:
        a = self.args
        patch, batch = phase_at(self.step - 1, self.phases)  # the crops the last step trained on
        recipe = (
            f"LIR (lir.network) trained with lir training/train.py on CBSD432 (BSDS500 minus CBSD68) "
            f"random crops {crop_schedule(self.phases)}, flips/rot90"
            f"{f', synthetic smooth sky on top of a crop with p={a.sky_prob:g}' if a.sky_prob else ''}; "
            f"task {a.task}: {DISTRIBUTIONS[a.task]}; {a.loss} loss; AdamW lr {a.lr:g} "
            f"(warmup {a.warmup}, cosine to {a.min_lr:g} over {a.steps} steps) wd {a.wd:g} "
            f"betas {a.beta1}/{a.beta2}; EMA {a.ema} (these weights, decay warmup "
            f"{'on' if ema_decay_at(0, a) < a.ema else 'off'}); "
            f"{'bf16 autocast' if a.bf16 else 'fp32'}{', channels_last' if a.channels_last else ''}"
            f"{', torch.compile' if a.compile else ''}, "
            f"{a.device}, {a.threads} threads"
        )
        meta = {
            "config": json.dumps(self.cfg.to_dict()),
            "task": a.task,
            "steps": str(self.step),
            "batch": str(batch),
            "patch": str(patch),
            "recipe": recipe,
            "wall_time_s": f"{self.wall:.0f}",
            "weights": "ema",
            "trainer": "lir training/train.py",
        }
        if self.started_from:
            sf = self.started_from
            meta["started_from"] = json.dumps(sf)
            if sf.get("steps"):
                meta["steps_total"] = str(int(sf["steps"]) + self.step)
        if val_psnr is not None:
            meta["val_psnr"] = f"{val_psnr:.3f}"
            meta["val_set"] = (
                f"first {a.val_count} {Path(a.val_data).name} images, centre {a.val_size}px crops, "
                + ("sigma 25 float noise, seed = index" if a.task == "denoise" else "held-out degradation")
            )
        return meta

    def save(self) -> None:
        """Write ema.safetensors, state.safetensors and state.json (in that order, each atomic).

        state.json is written last and names the step: a crash between files leaves a
        consistent older state.json whose step is checked against state.safetensors on resume.
        """
        t0 = time.time()
        atomic_save(contiguous_state(self.ema), self.out / "ema.safetensors", self._metadata(self.last_val))
        tensors: dict[str, torch.Tensor] = {}
        for k, v in contiguous_state(self.model).items():
            tensors[f"model/{k}"] = v
        for k, v in contiguous_state(self.ema).items():
            tensors[f"ema/{k}"] = v
        adam_steps = {}
        for name, p in zip(self.param_names, self.params):
            st = self.opt.state.get(p)
            if st:
                tensors[f"exp_avg/{name}"] = st["exp_avg"].detach().cpu().contiguous().clone()
                tensors[f"exp_avg_sq/{name}"] = st["exp_avg_sq"].detach().cpu().contiguous().clone()
                adam_steps[name] = float(st["step"])
        tensors["rng/data"] = self.gen.get_state().clone()
        tensors["rng/torch"] = torch.get_rng_state().clone()
        atomic_save(tensors, self.out / "state.safetensors", {"step": str(self.step)})
        state = {
            "version": STATE_VERSION,
            "step": self.step,
            "wall_time_s": self.wall,
            "best_val_psnr": None if self.best_psnr == -math.inf else self.best_psnr,
            "last_val_psnr": self.last_val,
            "adam_steps": adam_steps,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "args": vars(self.args),
        }
        atomic_write_text(json.dumps(state, indent=1), self.out / "state.json")
        self.wall += time.time() - t0

    def _load_state(self, state: dict[str, Any]) -> None:
        tensors, meta = read_safetensors(self.out / "state.safetensors")
        if int(meta.get("step", -1)) != state["step"]:
            raise SystemExit(
                f"state.json (step {state['step']}) and state.safetensors (step {meta.get('step')}) disagree"
            )
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema/")})
        for name, p in zip(self.param_names, self.params):
            if f"exp_avg/{name}" in tensors:
                # empty_like keeps the parameter's memory format (channels_last), as AdamW's own init
                self.opt.state[p] = {
                    "step": torch.tensor(state["adam_steps"][name], dtype=torch.float32),
                    "exp_avg": torch.empty_like(p).copy_(tensors[f"exp_avg/{name}"]),
                    "exp_avg_sq": torch.empty_like(p).copy_(tensors[f"exp_avg_sq/{name}"]),
                }
        self.gen.set_state(tensors["rng/data"])
        torch.set_rng_state(tensors["rng/torch"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.wall = state["wall_time_s"]
        self.best_psnr = -math.inf if state["best_val_psnr"] is None else state["best_val_psnr"]
        self.last_val = state.get("last_val_psnr")

    def log(self, record: dict[str, Any]) -> None:
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)

    # ---- steps

    def autocast(self):  # type: ignore[no-untyped-def]
        a = self.args
        if self.device.type == "cuda" and a.amp != "none":
            return torch.autocast("cuda", dtype=torch.bfloat16 if a.amp == "bf16" else torch.float16)
        if self.device.type == "cpu" and a.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def loss_fn(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.args.loss == "l1":
            return F.l1_loss(out, target)
        if self.args.loss == "l1-fft":
            # MIMO-UNet's frequency term (Cho et al., ICCV 2021) as published: unnormalised
            # spectrum, weight 0.1, so on 256² crops it outweighs the pixel L1 about 17:1
            spec = torch.view_as_real(torch.fft.rfft2(out - target))
            return F.l1_loss(out, target) + 0.1 * spec.abs().mean()
        if self.args.loss == "l1-edge":
            # The derain ghosts are thin residues of streak edges on flat areas: the L1 of a high-pass
            # copy (the image minus its 5x5 binomial blur) counts them 1 + edge_weight times and a
            # smooth cast once; the filter is linear, so it runs once, on the error
            err = out - target
            return err.abs().mean() + self.args.edge_weight * high_pass(err).abs().mean()
        eps = self.args.charbonnier_eps
        return torch.sqrt((out - target) ** 2 + eps * eps).mean()

    def train_step(self) -> float:
        a = self.args
        patch, batch = phase_at(self.step, self.phases)
        clean = self.data.sample(batch, patch, self.gen)
        if a.sky_prob > 0:
            clean = paste_skies(clean, self.gen, a.sky_prob)
        noisy = degrade(a.task, clean, self.gen)  # held_out is never set in training
        clean = clean.to(self.device, memory_format=self.memory_format)
        noisy = noisy.to(self.device, memory_format=self.memory_format)
        lr = lr_at(self.step, a)
        for g in self.opt.param_groups:
            g["lr"] = lr
        with self.autocast():
            out = self.forward(noisy)
        loss = self.loss_fn(out.float(), clean)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.scale(loss).backward()
            if a.clip_grad > 0:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(self.params, a.clip_grad)
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            if a.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(self.params, a.clip_grad)
            self.opt.step()
        self.update_ema()
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def update_ema(self) -> None:
        d = ema_decay_at(self.step, self.args)
        ema_p = list(self.ema.parameters())
        torch._foreach_lerp_(ema_p, list(self.model.parameters()), 1.0 - d)
        for eb, b in zip(self.ema.buffers(), self.model.buffers()):
            eb.copy_(b)

    @torch.no_grad()
    def validate(self) -> float:
        """PSNR of the EMA model on the fixed validation crops (fp32, one image at a time)."""
        outs = []
        for i in range(self.val_noisy.shape[0]):
            x = self.val_noisy[i : i + 1].to(self.device, memory_format=self.memory_format)
            outs.append(self.ema(x).float().cpu())
        return psnr_8bit(torch.cat(outs), self.val_clean)

    def run_validation(self) -> None:
        t0 = time.time()
        v = self.validate()
        self.last_val = v
        improved = v > self.best_psnr
        if improved:
            self.best_psnr = v
            atomic_save(contiguous_state(self.ema), self.out / "best.safetensors", self._metadata(v))
        self.wall += time.time() - t0
        self.log({"step": self.step, "val_psnr": round(v, 3), "best": round(self.best_psnr, 3),
                  "val_s": round(time.time() - t0, 2)})

    def train(self) -> int:
        a = self.args
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if self.step == 0 and a.val_every > 0:
            self.run_validation()  # the starting point (for --init-from: the published weights)
        losses: list[float] = []
        times: list[float] = []
        stop_at = self.step + a.stop_after if a.stop_after else None
        while self.step < a.steps and self.stop_signal is None:
            if stop_at is not None and self.step >= stop_at:
                self.stop_signal = signal.SIGINT  # behave as if interrupted: save, say how to resume
                break
            t0 = time.time()
            losses.append(self.train_step())
            dt = time.time() - t0
            self.wall += dt
            times.append(dt)
            if not math.isfinite(losses[-1]):
                self.log({"step": self.step, "error": "non-finite loss; stopping without saving"})
                return 2
            if self.step % a.log_every == 0 or self.step == a.steps:
                patch, batch = phase_at(self.step - 1, self.phases)
                self.log({"step": self.step, "loss": float(np.mean(losses)), "lr": lr_at(self.step - 1, a),
                          "s_per_step": float(np.mean(times)), "patch": patch, "batch": batch,
                          "wall_h": round(self.wall / 3600, 3)})
                losses, times = [], []
            if a.val_every > 0 and (self.step % a.val_every == 0 or self.step == a.steps):
                self.run_validation()
            if self.step % a.save_every == 0 or self.step == a.steps:
                self.save()
        if self.stop_signal is not None:
            self.save()
            self.log({"step": self.step, "stopped": "stop-after" if stop_at is not None and self.step >= stop_at
                      else signal.Signals(self.stop_signal).name,
                      "resume": f"python training/train.py --resume {self.out}"})
            return 0
        self.log({"step": self.step, "done": True, "best_val_psnr": round(self.best_psnr, 3),
                  "wall_h": round(self.wall / 3600, 3)})
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.stop_signal = signum
        print(f"received {signal.Signals(signum).name}: saving after this step", flush=True)


# ------------------------------------------------------------------------------------ cli

RESUME_OVERRIDABLE = ("threads", "save_every", "val_every", "log_every", "steps", "stop_after")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--task", choices=sorted(DEGRADATIONS), default="denoise")
    p.add_argument("--out", help="output folder (outside the repository); required unless --resume")
    p.add_argument("--resume", metavar="OUT",
                   help="continue the run in OUT exactly (its arguments are reused; --threads, --steps, "
                        "--stop-after and the --*-every intervals given here replace them)")
    p.add_argument("--init-from", metavar="X.safetensors",
                   help="start from published weights (config from its metadata), fresh optimizer")
    p.add_argument("--dim", type=int, default=32, help="width of a fresh model (default 32)")
    p.add_argument("--blocks", type=int, default=1, help="EAA blocks per stage of a fresh model (default 1)")
    p.add_argument("--config", help="JSON LIRConfig of a fresh model (overrides --dim/--blocks); with "
                   "--init-from, a config with more EAA blocks to grow those weights into (added blocks "
                   "start as identities)")
    p.add_argument("--data", default=DEFAULT_DATA, help="training images (CBSD432)")
    p.add_argument("--sky-prob", type=float, default=0.0,
                   help="paste a synthetic smooth sky over the top of a crop with this probability "
                        "(training/smooth_skies.py)")
    p.add_argument("--val-data", default=DEFAULT_VAL, help="validation images (monitoring only)")
    p.add_argument("--val-count", type=int, default=6)
    p.add_argument("--val-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10000, help="total steps; the cosine schedule spans them")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128, help="crop side (multiple of 32, >= 128)")
    p.add_argument("--progressive", help="patch/batch schedule STEP:PATCH[:BATCH],... e.g. 0:128:8,6000:192:4")
    p.add_argument("--loss", choices=["l1", "l1-fft", "l1-edge", "charbonnier"], default="l1",
                   help="l1-fft: L1 + 0.1 x L1 of the 2-D FFT (MIMO-UNet's deblurring loss); "
                   "l1-edge: L1 + L1 of a high-pass copy (image minus a 5x5 binomial blur)")
    p.add_argument("--edge-weight", type=float, default=1.0,
                   help="weight of the high-pass term in --loss l1-edge")
    p.add_argument("--charbonnier-eps", type=float, default=1e-3)
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--warmup", type=int, default=500, help="linear warmup steps")
    p.add_argument("--wd", type=float, default=1e-4)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--clip-grad", type=float, default=0.0, help="gradient-norm clip (0 = off)")
    p.add_argument("--ema", type=float, default=0.999, help="final EMA decay")
    p.add_argument("--ema-warmup", choices=["auto", "on", "off"], default="auto",
                   help="warm the EMA decay up as (1+t)/(10+t); auto = on unless --init-from")
    p.add_argument("--seed", type=int, default=0, help="data/noise seed (evaluation seeds are far from it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU (speed option)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward (speed option)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="bf16", help="autocast on CUDA")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--val-every", type=int, default=250, help="0 disables validation")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop (saving, resumable) after this many steps in this session; 0 = run to --steps")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    resume_state = None
    if args.resume:
        state_path = Path(args.resume) / "state.json"
        if not state_path.exists():
            raise SystemExit(f"--resume: {state_path} not found")
        resume_state = json.loads(state_path.read_text())
        # A parser-level default of None marks what the command line left out, so an override equal to
        # the option's own default (say --threads 2 on a run saved with 1) still counts as given.
        probe = build_parser()
        probe.set_defaults(**dict.fromkeys(RESUME_OVERRIDABLE))
        explicit = probe.parse_args(argv)
        given = {k: getattr(explicit, k) for k in RESUME_OVERRIDABLE if getattr(explicit, k) is not None}
        # Arguments added since the run started take their defaults.
        args = argparse.Namespace(**{**vars(parser.parse_args([])), **resume_state["args"]})
        args.resume = str(Path(args.out))
        args.stop_after = 0  # a session limit, not part of the run
        for k, v in given.items():
            setattr(args, k, v)
    elif not args.out:
        parser.error("--out is required (or --resume OUT)")
    if not 0.0 <= args.sky_prob <= 1.0:
        parser.error(f"--sky-prob must be a probability in [0, 1], got {args.sky_prob}")
    if not args.resume and (Path(args.out) / "state.json").exists():
        raise SystemExit(f"{args.out} already holds a run; use --resume {args.out} or another --out")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}", flush=True)
    trainer = Trainer(args, resume_state)
    n_params = sum(p.numel() for p in trainer.params)
    print(f"config {trainer.cfg.to_dict()} ({n_params / 1e6:.3f} M params), task {args.task}, "
          f"step {trainer.step}/{args.steps}, out {trainer.out}", flush=True)
    return trainer.train()


if __name__ == "__main__":
    sys.exit(main())
