"""Degradations are pure, deterministic, shape-preserving, and the held-out setting is distinct."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from training import degradations  # noqa: E402
from training.degradations import (  # noqa: E402
    TASKS,
    _fft_conv_same,
    degrade,
    held_out_generator,
    light_rain,
    moderate_blur,
    quantize_8bit,
)


def _clean(n: int = 2, h: int = 96, w: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    # smooth content so blur/haze visibly change something
    base = torch.rand(n, 3, h // 8, w // 8, generator=g)
    return torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("held_out", [False, True])
def test_pure_and_deterministic(task: str, held_out: bool) -> None:
    x = _clean()
    before = x.clone()
    a = degrade(task, x, torch.Generator().manual_seed(5), held_out=held_out)
    b = degrade(task, x, torch.Generator().manual_seed(5), held_out=held_out)
    assert torch.equal(x, before), "input modified"
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b), "same generator state must give the same batch"
    c = degrade(task, x, torch.Generator().manual_seed(6), held_out=held_out)
    assert not torch.equal(a, c)
    assert (a - x).abs().mean() > 1e-3, "degradation did nothing"


@pytest.mark.parametrize("task", ["deblur", "derain", "dehaze"])
def test_8bit_tasks_are_quantised(task: str) -> None:
    y = degrade(task, _clean(), torch.Generator().manual_seed(0))
    assert torch.equal(y, quantize_8bit(y))


def test_denoise_float_unclipped() -> None:
    x = torch.full((4, 3, 64, 64), 0.99)
    y = degrade("denoise", x, torch.Generator().manual_seed(0), held_out=True)  # sigma 40-50
    assert y.max() > 1.0 and not torch.equal(y, quantize_8bit(y))


def test_held_out_generators_differ_from_training_seeds() -> None:
    x = _clean()
    train = degrade("deblur", x, torch.Generator().manual_seed(0))
    held = degrade("deblur", x, held_out_generator(0), held_out=True)
    assert not torch.equal(train, held)


@pytest.mark.parametrize(("task", "milder"), [("deblur", moderate_blur), ("derain", light_rain)])
def test_second_evaluation_setting_is_deterministic_and_milder_than_the_held_out_one(
    task: str, milder: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(8, 3, 48, 48, generator=g), size=(192, 192), mode="bilinear")
    before = x.clone()
    mild = milder(x, held_out_generator(0))
    assert torch.equal(x, before), "input modified"
    assert torch.equal(mild, milder(x, held_out_generator(0)))
    assert torch.equal(mild, quantize_8bit(mild))
    heavy = degrade(task, x, held_out_generator(0), held_out=True)
    err_mild, err_heavy = ((mild - x) ** 2).mean(), ((heavy - x) ** 2).mean()
    assert 1e-4 < err_mild < 0.7 * err_heavy


def test_unknown_task() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        degrade("desnow", _clean(), torch.Generator())


@pytest.mark.parametrize("size", [(41, 53), (128, 128), (20, 90)])
def test_fft_convolution_equals_direct_convolution(size: tuple[int, int]) -> None:
    """The FFT path (zero-extended to a fast length) is a linear convolution with reflect padding."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, *size, generator=g, dtype=torch.float64)
    k = torch.rand(2, 9, 9, generator=g, dtype=torch.float64)
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    got = _fft_conv_same(x, k)
    want = torch.cat([
        torch.nn.functional.conv2d(
            torch.nn.functional.pad(x[i : i + 1], (4, 4, 4, 4), mode="reflect"), k[i].expand(3, 1, 9, 9), groups=3
        )
        for i in range(2)
    ])  # fmt: skip
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def test_storms_are_heavier_rain_than_the_rest_of_the_training_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.full((16, 3, 128, 128), 0.3)

    def mean_change(storm_prob: float) -> float:
        monkeypatch.setattr(degradations, "STORM_PROB", storm_prob)
        return float((degradations.add_rain(x, torch.Generator().manual_seed(0)) - x).mean())

    assert mean_change(1.0) > 1.5 * mean_change(0.0)
