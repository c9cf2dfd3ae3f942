"""Building blocks of the LIR network, in their fast inference form.

Every block computes exactly the function of the authors' code (see `literal.py` for the
spec-literal form these are tested against) and is differentiable, so the same modules train.
Parameter names are the authors' state-dict names.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The adaptive filter's fixed 3×3 kernels in the order of its `alpha` weights; the second name is
# the state-dict key a CPU-built authors' model saves for it (Sobel_y is never saved).
FILTER_KERNELS: tuple[tuple[str, str | None, tuple[tuple[int, ...], ...]], ...] = (
    ("sobel_x", "Sobel_x", ((1, 0, -1), (2, 0, -2), (1, 0, -1))),
    ("sobel_y", None, ((1, 2, 1), (0, 0, 0), (-1, -2, -1))),
    ("laplacian", "Laplation", ((0, 1, 0), (1, -4, 1), (0, 1, 0))),
    ("edge", "Edge", ((-1, -1, -1), (-1, 8, -1), (-1, -1, -1))),
    ("sobel_xy", "Sobel_xy", ((0, 1, 2), (-1, 0, 1), (-2, -1, 0))),
    ("sobel_yx", "Sobel_yx", ((-2, -1, 0), (-1, 0, 1), (0, 1, 2))),
    ("roberts_x", "Roberts_x", ((1, 0, 0), (0, -1, 0), (0, 0, 0))),
    ("roberts_y", "Roberts_y", ((0, 1, 0), (-1, 0, 0), (0, 0, 0))),
)
FILTER_KERNEL_SCALE = 1e-3
FIXED_KERNEL_KEYS = tuple(key for _, key, _ in FILTER_KERNELS if key is not None)
BLUR_SIZE = 15
BLUR_SIGMA = 5.0


def _per_dtype_and_device(make: Callable[[torch.dtype, torch.device | None], Tensor]) -> Callable[..., Tensor]:
    """Cache ``make``'s constant per (dtype, device) for eager calls; make it afresh while traced.

    torch.compile and torch.export (ONNX) fold a traced constant into the graph anyway, and a
    cache seen while tracing makes Dynamo warn and could keep the tracer's fake tensors.
    """
    cached = functools.lru_cache(maxsize=None)(make)

    @functools.wraps(make)
    def constant(dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> Tensor:
        return make(dtype, device) if torch.compiler.is_compiling() else cached(dtype, device)

    constant.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return constant


# Constants are made in float64 and cast once per (dtype, device), so a float64 model is exact.
# They outlive the call that made them, so never as inference tensors: one made under
# torch.inference_mode (a restore) would break every later forward pass that records gradients.
@_per_dtype_and_device
def filter_bank(dtype: torch.dtype, device: torch.device | None) -> Tensor:
    """The eight fixed kernels, scaled by 1e-3, as an 8×3×3 tensor."""
    with torch.inference_mode(False):
        bank = torch.tensor([k for _, _, k in FILTER_KERNELS], dtype=torch.float64)
        return (bank * FILTER_KERNEL_SCALE).to(device=device, dtype=dtype)


@_per_dtype_and_device
def blur_taps(dtype: torch.dtype, device: torch.device | None) -> Tensor:
    """The normalised 1-D Gaussian (15 taps, σ = 5) whose outer product is the high-pass blur."""
    with torch.inference_mode(False):
        t = torch.arange(BLUR_SIZE, dtype=torch.float64) - BLUR_SIZE // 2
        g = torch.exp(-0.5 * (t / BLUR_SIGMA) ** 2)
        return (g / g.sum()).to(device=device, dtype=dtype)


def fixed_kernel_error(key: str, value: Tensor, channels: int | None = None) -> str | None:
    """Why `value` is not the constant an authors' CPU-built checkpoint stores under `key`, or None."""
    name = key.rsplit(".", 1)[-1]
    index = next(i for i, (_, k, _) in enumerate(FILTER_KERNELS) if k == name)
    if value.ndim != 4 or value.shape[1:] != (1, 3, 3) or (channels is not None and value.shape[0] != channels):
        want = f"[{channels if channels is not None else 'c'}, 1, 3, 3]"
        return f"fixed kernel {key!r} has shape {list(value.shape)}, expected {want}"
    expected = filter_bank()[index].expand_as(value)
    if not torch.allclose(value.detach().to("cpu", torch.float64), expected, rtol=1e-5, atol=1e-9):
        return (
            f"fixed kernel {key!r} does not hold the constant {name} kernel ×1e-3; "
            "these kernels are not weights, so the checkpoint is not an LIR network's"
        )
    return None


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels (eps 1e-6), on the channels-last view of the map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # The fused layer_norm kernel reads a channels_last map in place (no copy).
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global mean → 1×1 (c→c/16) → ReLU → 1×1 → sigmoid, times the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // 16, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 16, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class ResBlock(nn.Module):
    """x + alpha·(1×1 → depthwise 3×3 → LayerNorm2d → GELU → 1×1)(x), with optional channel attention."""

    def __init__(self, channels: int, channel_attention: bool = False) -> None:
        super().__init__()
        hidden = 2 * channels
        self.conv_1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.conv_2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.layernorm = LayerNorm2d(hidden)
        self.conv_3 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.ca = ChannelAttention(channels) if channel_attention else None
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        z = F.gelu(self.layernorm(self.conv_2(self.conv_1(x))))
        alpha = self.alpha.view(-1)
        if self.ca is None:
            # alpha folded into the last 1×1 conv: one pass fewer over the map.
            return x + F.conv2d(z, self.conv_3.weight * alpha.view(-1, 1, 1, 1))
        y = self.conv_3(z)
        # CA(y)·alpha = y·(sigmoid(...)·alpha): one fused multiply-add with a per-channel factor.
        return torch.addcmul(x, y, self.ca.attention(y) * self.alpha)


class SimpleGate(nn.Module):
    """x + gamma·(a ⊙ b), where (a, b) are the halves of a 1×1 conv of the normalised input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(channels)
        self.conv = nn.Conv2d(channels, 2 * channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        gamma = self.gamma.view(-1)
        # gamma folded into the first half of the conv, so the gate and residual are one addcmul.
        weight = torch.cat([self.conv.weight[:c] * gamma.view(-1, 1, 1, 1), self.conv.weight[c:]])
        bias = torch.cat([self.conv.bias[:c] * gamma, self.conv.bias[c:]])
        a, b = F.conv2d(self.norm(x), weight, bias).chunk(2, dim=1)
        return torch.addcmul(x, a, b)


class PatchAttention(nn.Module):
    """Scales every pixel by a per-token weight; token (i, j) gathers the pixels strided hs, ws apart.

    Only the m-channel projection is rearranged into tokens: the weights form an hs×ws map that is
    tiled over the image, so the c-channel input is multiplied in place, never rearranged.
    """

    def __init__(self, patch: tuple[int, int], channels: int, reduced: int) -> None:
        super().__init__()
        self.patch = patch
        ph, pw = patch
        tokens = ph * pw
        self.down = nn.Conv2d(channels, reduced, 1, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(reduced * tokens, tokens),
            nn.LayerNorm(tokens),
            nn.GELU(),
            nn.Linear(tokens, 1),
        )
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def token_weights(self, x: Tensor) -> Tensor:
        """The per-token weight map, N×1×hs×ws."""
        n, _, h, w = x.shape
        ph, pw = self.patch
        hs, ws = h // ph, w // pw
        yd = self.down(x)
        # Rows r = a·hs + i: split H into (a, i) and W into (b, j), features ordered (k, a, b).
        tokens = yd.reshape(n, -1, ph, hs, pw, ws).permute(0, 3, 5, 1, 2, 4).reshape(n, hs * ws, -1)
        return self.mlp(tokens).view(n, 1, hs, ws)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        ph, pw = self.patch
        weights = self.token_weights(x)  # n×1×hs×ws
        # beta + w(r mod hs, q mod ws) as a small n×c×1×hs×1×ws factor broadcast over the split map.
        factor = (self.beta.view(1, c, 1, 1) + weights).unsqueeze(2).unsqueeze(4)
        tiled = x.unflatten(3, (pw, w // pw)).unflatten(2, (ph, h // ph))
        return (tiled * factor).reshape(n, c, h, w)


class Filters(nn.Module):
    """The adaptive filter: a learned mix of eight fixed 3×3 kernels, a high-pass and the identity.

    The mix is linear in the input, so each forward folds it from the current `alpha`/`beta` into one
    depthwise 3×3 kernel plus a separable 15-tap blur (reloaded weights refold automatically).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.alpha = nn.Parameter(torch.zeros(9))
        self.beta = nn.Parameter(torch.ones(1))

    def folded_kernel(self) -> Tensor:
        """The 3×3 kernel equal to Σ alpha_k·kernel_k + (alpha_8 + beta)·identity, per channel."""
        bank = filter_bank(self.alpha.dtype, self.alpha.device)
        kernel = torch.einsum("k,kij->ij", self.alpha[:8], bank)
        centre = F.pad((self.alpha[8] + self.beta).view(1, 1), (1, 1, 1, 1))
        return (kernel + centre).expand(self.channels, 1, 3, 3)

    def scaled_blur(self, x: Tensor, scale: Tensor) -> Tensor:
        """scale·G(x): 15×15 Gaussian blur (σ = 5), reflect-padded by 7, as two 1-D passes."""
        c = x.shape[1]
        pad = BLUR_SIZE // 2
        taps = blur_taps(x.dtype, x.device)
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        vertical = taps.view(1, 1, -1, 1).expand(c, 1, -1, 1)
        x = F.conv2d(x, vertical * scale, groups=c)
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            # oneDNN (torch 2.13) never returns from a bfloat16 depthwise 1×15 convolution on a
            # channels_last map; the same pass as a vertical one on the transposed view is fine.
            return F.conv2d(x.transpose(2, 3), vertical, groups=c).transpose(2, 3)
        return F.conv2d(x, vertical.transpose(2, 3), groups=c)

    def forward(self, x: Tensor) -> Tensor:
        # HighPass(x) = x − G(x): its x part is in the kernel centre, its −G(x) part is the blur's scale.
        y = F.conv2d(x, self.folded_kernel().to(x.dtype), padding=1, groups=self.channels)
        return y + self.scaled_blur(x, -self.alpha[8].to(x.dtype))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        # A CPU-built authors' model also saved its fixed kernels: constants, checked and dropped.
        for name in FIXED_KERNEL_KEYS:
            value = state_dict.pop(prefix + name, None)
            if value is not None:
                error = fixed_kernel_error(prefix + name, value, self.channels)
                if error:
                    error_msgs.append(error)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


class AttentionBlock(nn.Module):
    """ResBlock → PatchAttention → SimpleGate → ResBlock with channel attention."""

    def __init__(self, patch: tuple[int, int], channels: int, reduced: int) -> None:
        super().__init__()
        self.resblock = ResBlock(channels)
        self.pa = PatchAttention(patch, channels, reduced)
        self.sg = SimpleGate(channels)
        self.rescablock = ResBlock(channels, channel_attention=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.rescablock(self.sg(self.pa(self.resblock(x))))


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution, padding 1, no bias (every 3×3 conv of the network)."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def up2(cin: int, cout: int) -> nn.ConvTranspose2d:
    """Transposed convolution doubling H and W (kernel 4, stride 2, padding 1, no bias)."""
    return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False)


class EAABlock(nn.Module):
    """The efficient adaptive attention block: a five-stage U-shape over H, H/2 and H/4."""

    def __init__(self, channels: int, patch: int, divisor: int) -> None:
        super().__init__()
        d, p, q = channels, (patch, patch), (patch // 2, patch // 2)
        m = d // divisor
        self.stage1 = nn.Sequential(AttentionBlock(p, d, m), conv3x3(d, d, stride=2))
        self.stage2 = nn.Sequential(Filters(d), AttentionBlock(q, d, m), conv3x3(d, d, stride=2))
        self.stage3 = nn.Sequential(Filters(d), AttentionBlock(q, d, m))
        self.stage4 = nn.Sequential(Filters(d), AttentionBlock(q, d, m), up2(d, d))
        self.stage5 = nn.Sequential(Filters(2 * d), AttentionBlock(p, 2 * d, 2 * d // divisor), up2(2 * d, d))
        self.transpose = up2(d, d)

    def forward(self, x: Tensor) -> Tensor:
        lq = self.stage1(x)
        hq = self.stage4(self.stage3(self.stage2(lq)))
        y = self.stage5(torch.cat([hq, lq], dim=1))
        return y + x - self.transpose(lq - hq)


class ConvBlock(nn.Module):
    """3×3 conv (no bias) followed by a single-slope PReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv3x3(cin, cout)
        self.act = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))
