"""The spec-literal form of the network: the reference the fast form is tested and benchmarked against.

Internal: `lir` never runs it for users. It computes each block the way the authors' code spells it
out — the adaptive filter as nine separate depthwise convolutions plus a 2-D 15×15 blur, patch
attention by rearranging the whole feature map into tokens and back, and LayerNorm from explicit
mean and variance — on the very same parameters as the fast form.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import BLUR_SIZE, Filters, LayerNorm2d, PatchAttention, blur_taps, filter_bank

__all__ = ["literal_copy"]


class _LiteralLayerNorm2d(LayerNorm2d):
    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


def _to_tokens(x: Tensor, ph: int, pw: int) -> Tensor:
    """N×C×H×W → N×(hs·ws)×C×ph×pw, token (i, j) holding rows i + a·hs and columns j + b·ws."""
    n, c, h, w = x.shape
    hs, ws = h // ph, w // pw
    return x.reshape(n, c, ph, hs, pw, ws).permute(0, 3, 5, 1, 2, 4).reshape(n, hs * ws, c, ph, pw)


def _from_tokens(t: Tensor, h: int, w: int) -> Tensor:
    n, _, c, ph, pw = t.shape
    hs, ws = h // ph, w // pw
    return t.reshape(n, hs, ws, c, ph, pw).permute(0, 3, 4, 1, 5, 2).reshape(n, c, h, w)


class _LiteralPatchAttention(PatchAttention):
    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        ph, pw = self.patch
        if h % ph or w % pw:
            raise ValueError(f"patch attention needs H % {ph} == 0 and W % {pw} == 0, got {h}×{w}")
        tokens = _to_tokens(self.down(x), ph, pw).flatten(2)
        weights = self.mlp(tokens)  # N×T×1
        scaled = _to_tokens(x, ph, pw) * weights.view(n, -1, 1, 1, 1)
        return self.beta * x + _from_tokens(scaled, h, w)


class _LiteralFilters(Filters):
    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        bank = filter_bank(x.dtype, x.device)
        out = self.beta * x
        for k in range(8):
            kernel = bank[k].expand(c, 1, 3, 3)
            out = out + self.alpha[k] * F.conv2d(x, kernel, padding=1, groups=c)
        taps = blur_taps(x.dtype, x.device)
        blur2d = torch.outer(taps, taps).expand(c, 1, BLUR_SIZE, BLUR_SIZE)
        pad = BLUR_SIZE // 2
        blurred = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), blur2d, groups=c)
        return out + self.alpha[8] * (x - blurred)


_LITERAL = {LayerNorm2d: _LiteralLayerNorm2d, PatchAttention: _LiteralPatchAttention, Filters: _LiteralFilters}


def literal_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` (same parameter values) whose blocks compute the spec-literal form."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        literal = _LITERAL.get(type(module))
        if literal is not None:
            module.__class__ = literal
    return clone
