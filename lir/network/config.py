"""The architecture configuration of an LIR network, and reading it off a checkpoint."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["LIRConfig", "config_from_state_dict"]


@dataclasses.dataclass(frozen=True)
class LIRConfig:
    """Size of an LIR network; the defaults are the authors' published models (7.31 M parameters).

    Attributes:
        img_channel: input and output channels.
        dim: channel width; a positive multiple of 16 (channel attention uses dim/16).
        left_blk_num: EAA blocks in the encoder stages EAA1 and EAA2.
        bottom_blk_num: EAA blocks in the bottleneck EAA3.
        right_blk_num: EAA blocks in the decoder stages EAA5 and EAA4 (the authors' order).
    """

    img_channel: int = 3
    dim: int = 48
    left_blk_num: tuple[int, int] = (3, 3)
    bottom_blk_num: int = 3
    right_blk_num: tuple[int, int] = (4, 3)

    def __post_init__(self) -> None:
        for name in ("left_blk_num", "right_blk_num"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise ValueError(f"LIRConfig.{name} must be a pair of block counts, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        counts = {
            "img_channel": self.img_channel,
            "dim": self.dim,
            "bottom_blk_num": self.bottom_blk_num,
            "left_blk_num[0]": self.left_blk_num[0],
            "left_blk_num[1]": self.left_blk_num[1],
            "right_blk_num[0]": self.right_blk_num[0],
            "right_blk_num[1]": self.right_blk_num[1],
        }
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"LIRConfig.{name} must be a non-negative int, got {value!r}")
        if self.img_channel < 1:
            raise ValueError(f"LIRConfig.img_channel must be at least 1, got {self.img_channel}")
        if self.dim < 16 or self.dim % 16:
            raise ValueError(f"LIRConfig.dim must be a positive multiple of 16, got {self.dim}")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (pairs as lists)."""
        return {
            "img_channel": self.img_channel,
            "dim": self.dim,
            "left_blk_num": list(self.left_blk_num),
            "bottom_blk_num": self.bottom_blk_num,
            "right_blk_num": list(self.right_blk_num),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LIRConfig:
        """Build from a dict such as `to_dict()` or a checkpoint's metadata; missing fields take defaults."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an LIR config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LIR config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)


_BLOCK_KEY = re.compile(r"^(EAA[1-5])\.(\d+)\.")


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> LIRConfig:
    """Read the configuration off an LIR state dict (authors' or `lir` keys) from its keys and shapes.

    Raises:
        ValueError: the state dict is not an LIR network's.
    """
    head = state_dict.get("Conv_head.conv.weight")
    if head is None or getattr(head, "ndim", None) != 4:
        hint = ""
        keys = list(state_dict)
        if any(k.startswith("module.") for k in keys) or {"params", "params_ema"} & set(keys):
            hint = " It looks like a raw BasicSR training file: convert it with `lir convert`."
        preview = ", ".join(keys[:3]) or "no keys"
        raise ValueError(
            f"not an LIR checkpoint: it has no 4-D 'Conv_head.conv.weight' (first keys: {preview}).{hint}"
        )
    blocks: dict[str, set[int]] = {f"EAA{i}": set() for i in range(1, 6)}
    for key in state_dict:
        match = _BLOCK_KEY.match(key)
        if match:
            blocks[match.group(1)].add(int(match.group(2)))
    counts = {}
    for stage, indices in blocks.items():
        if indices and indices != set(range(max(indices) + 1)):
            raise ValueError(f"not an LIR checkpoint: {stage} block indices {sorted(indices)} are not 0..n-1")
        counts[stage] = len(indices)
    dim, img_channel = int(head.shape[0]), int(head.shape[1])
    try:
        return LIRConfig(
            img_channel=img_channel,
            dim=dim,
            left_blk_num=(counts["EAA1"], counts["EAA2"]),
            bottom_blk_num=counts["EAA3"],
            right_blk_num=(counts["EAA5"], counts["EAA4"]),
        )
    except ValueError as err:
        raise ValueError(f"not an LIR checkpoint: {err}") from None
