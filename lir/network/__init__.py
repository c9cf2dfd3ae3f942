"""The LIR network: architecture, configuration, and checkpoint-layout helpers."""

from collections.abc import Mapping

import torch

from .blocks import FIXED_KERNEL_KEYS, fixed_kernel_error
from .config import LIRConfig, config_from_state_dict
from .lir import LIR, MIN_SIZE, SIZE_MULTIPLE, check_input_size

__all__ = [
    "LIR",
    "LIRConfig",
    "MIN_SIZE",
    "SIZE_MULTIPLE",
    "check_input_size",
    "config_from_state_dict",
    "drop_fixed_kernels",
]


def drop_fixed_kernels(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of an authors' state dict without the fixed filter kernels a CPU-built model saves.

    Raises:
        ValueError: a fixed-kernel entry does not hold its constant.
    """
    kept = {}
    for key, value in state_dict.items():
        if key.rsplit(".", 1)[-1] in FIXED_KERNEL_KEYS:
            error = fixed_kernel_error(key, value)
            if error:
                raise ValueError(error)
        else:
            kept[key] = value
    return kept
