"""The LIR network (Lightweight Image Restoration, ACM MM 2024) as the authors' code computes it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import ConvBlock, EAABlock, conv3x3, up2
from .config import LIRConfig

__all__ = ["LIR", "SIZE_MULTIPLE", "MIN_SIZE", "check_input_size"]

SIZE_MULTIPLE = 32
"""Height and width must be multiples of this (two 2× downsamplings, then EAA blocks with /4 stages and patches)."""
MIN_SIZE = 128
"""Smallest height and width: the 15-tap reflect-padded blur runs on maps of H/16 and needs at least 8 pixels."""


def check_input_size(height: int, width: int) -> None:
    """Raise ValueError unless H×W meets the network's size contract (padding is the caller's job)."""
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(
            f"LIR needs height and width that are multiples of {SIZE_MULTIPLE} and at least {MIN_SIZE}, "
            f"got {height}×{width}; pad the input first (lir.restore does this for you)"
        )


def _stage(count: int, dim: int, patch: int, divisor: int) -> nn.Sequential:
    return nn.Sequential(*(EAABlock(dim, patch, divisor) for _ in range(count)))


class LIR(nn.Module):
    """The LIR restoration network: N×C×H×W in [0, 1] → restored N×C×H×W.

    State-dict keys are the authors' (`Conv_head.conv.weight`, `EAA1.0.stage1.0...`), so their
    checkpoints load unchanged, in either the GPU-saved layout or the CPU-saved one with fixed
    filter kernels (those are checked against the constants and dropped). Loading is strict.

    Input contract: H and W multiples of 32 and at least 128 (`ValueError` otherwise).
    float32 and float64 everywhere; bfloat16 on CPU; bfloat16 and float16 on CUDA.
    """

    def __init__(
        self,
        img_channel: int = 3,
        dim: int = 48,
        left_blk_num: tuple[int, int] = (3, 3),
        bottom_blk_num: int = 3,
        right_blk_num: tuple[int, int] = (4, 3),
    ) -> None:
        super().__init__()
        self.config = LIRConfig(img_channel, dim, tuple(left_blk_num), bottom_blk_num, tuple(right_blk_num))
        d = dim
        self.Conv_head = ConvBlock(img_channel, d)
        self.EAA1 = _stage(left_blk_num[0], d, 8, 16)
        self.downsample1 = nn.Sequential(conv3x3(d, d // 4), nn.PixelUnshuffle(2))
        self.EAA2 = _stage(left_blk_num[1], d, 8, 8)
        self.downsample2 = nn.Sequential(conv3x3(d, d // 4), nn.PixelUnshuffle(2))
        self.EAA3 = _stage(bottom_blk_num, d, 4, 8)
        self.upsample2 = nn.Sequential(conv3x3(d, 4 * d), nn.PixelShuffle(2))
        self.down = ConvBlock(2 * d, d)
        self.EAA4 = _stage(right_blk_num[1], d, 8, 8)
        self.upsample1 = nn.Sequential(conv3x3(d, 4 * d), nn.PixelShuffle(2))
        self.EAA5 = _stage(right_blk_num[0], d, 8, 16)
        self.transpose1 = up2(d, d)
        self.transpose2 = up2(d, img_channel)
        self.Conv_tail = ConvBlock(d, img_channel)

    @classmethod
    def from_config(cls, config: LIRConfig) -> LIR:
        """Build an untrained network of the given configuration."""
        return cls(**{k: getattr(config, k) for k in config.__dataclass_fields__})

    def forward(self, x: Tensor) -> Tensor:
        """Restore a batch; see the class docstring for the size contract."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise ValueError(f"LIR expects an N×C×H×W tensor, got {getattr(x, 'shape', type(x).__name__)}")
        if x.shape[1] != self.config.img_channel:
            raise ValueError(f"LIR expects {self.config.img_channel} channels, got {x.shape[1]}")
        check_input_size(x.shape[2], x.shape[3])
        img = x
        x = self.Conv_head(x)
        res = x
        lq = self.downsample1(self.EAA1(x))
        x = self.upsample2(self.EAA3(self.downsample2(self.EAA2(lq))))
        hq = self.EAA4(self.down(torch.cat([x, lq], dim=1)))
        skip = lq - hq
        x = self.EAA5(self.upsample1(hq)) + res - self.transpose1(skip)
        return self.Conv_tail(x) + img - self.transpose2(skip)
