"""train.py end to end on a tiny model and synthetic images: outputs, metadata, exact resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from training import train  # noqa: E402


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (160, 144, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def _args(images: Path, out: Path, *extra: str) -> list[str]:
    return ["--out", str(out), "--data", str(images), "--val-data", str(images), "--val-count", "1",
            "--val-size", "128", "--dim", "16", "--blocks", "1", "--batch", "1", "--steps", "4",
            "--warmup", "1", "--log-every", "1", "--val-every", "2", "--save-every", "100", "--threads", "1", *extra]


def test_train_and_exact_resume(images: Path, tmp_path: Path) -> None:
    assert train.main(_args(images, tmp_path / "a")) == 0
    assert train.main(_args(images, tmp_path / "b", "--stop-after", "2")) == 0
    assert json.loads((tmp_path / "b" / "state.json").read_text())["step"] == 2
    assert train.main(["--resume", str(tmp_path / "b")]) == 0
    for name in ("state.safetensors", "ema.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] == b[k]).all(), f"{name}:{k} differs after resume"
    with safe_open(str(tmp_path / "a" / "ema.safetensors"), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"])["dim"] == 16 and meta["task"] == "denoise" and meta["steps"] == "4"
    assert (tmp_path / "a" / "best.safetensors").exists()
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert any("val_psnr" in r for r in log) and any("loss" in r for r in log)


def test_resume_takes_overrides_equal_to_their_defaults(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert train.main(_args(images, out, "--stop-after", "1")) == 0  # saved with --threads 1
    assert train.main(["--resume", str(out), "--threads", "2", "--steps", "5"]) == 0
    args = json.loads((out / "state.json").read_text())["args"]
    assert args["threads"] == 2 == train.build_parser().get_default("threads")
    assert args["steps"] == 5 and args["batch"] == 1  # the rest comes from the run


def test_weights_load_into_lir(images: Path, tmp_path: Path) -> None:
    from lir.network import LIR, LIRConfig

    assert train.main(_args(images, tmp_path / "c", "--steps", "1", "--task", "deblur", "--loss", "l1-fft")) == 0
    path = tmp_path / "c" / "ema.safetensors"
    with safe_open(str(path), "pt") as f:
        cfg = LIRConfig.from_dict(json.loads(f.metadata()["config"]))
        assert "l1-fft loss" in f.metadata()["recipe"]
    model = LIR.from_config(cfg)
    model.load_state_dict(load_file(str(path)))  # strict: the authors' key layout


def test_progressive_schedule_is_recorded(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert train.main(_args(images, out, "--progressive", "0:128:1,2:128:2")) == 0
    with safe_open(str(out / "ema.safetensors"), "pt") as f:
        meta = f.metadata()
    assert "random crops 128x128 batch 1, from step 2 128x128 batch 2," in meta["recipe"]
    assert (meta["patch"], meta["batch"]) == ("128", "2")  # what the last step trained on, not --batch


def test_refuses_to_overwrite_a_run(images: Path, tmp_path: Path) -> None:
    assert train.main(_args(images, tmp_path / "d", "--steps", "1")) == 0
    with pytest.raises(SystemExit):
        train.main(_args(images, tmp_path / "d", "--steps", "1"))


def test_compiled_bf16_training_saves_the_plain_layout(images: Path, tmp_path: Path) -> None:
    from lir.network import LIR, LIRConfig

    assert train.main(_args(images, tmp_path / "e", "--steps", "2", "--compile", "--bf16")) == 0
    path = tmp_path / "e" / "ema.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert "torch.compile" in meta["recipe"] and "bf16 autocast" in meta["recipe"]
    model = LIR.from_config(LIRConfig.from_dict(json.loads(meta["config"])))
    model.load_state_dict(load_file(str(path)))  # no "_orig_mod." prefixes from the compiled wrapper
    log = [json.loads(line) for line in (tmp_path / "e" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)


def test_sky_prob_is_recorded_and_old_runs_resume(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "f"
    assert train.main(_args(images, out, "--sky-prob", "0.5", "--stop-after", "1")) == 0
    with safe_open(str(out / "ema.safetensors"), "pt") as f:
        assert "smooth sky on top of a crop with p=0.5" in f.metadata()["recipe"]
    # A run saved before --sky-prob existed resumes with the default (no skies).
    state = json.loads((out / "state.json").read_text())
    del state["args"]["sky_prob"]
    (out / "state.json").write_text(json.dumps(state))
    assert train.main(["--resume", str(out)]) == 0
    with safe_open(str(out / "ema.safetensors"), "pt") as f:
        assert "smooth sky" not in f.metadata()["recipe"]
    with pytest.raises(SystemExit):
        train.main(_args(images, tmp_path / "g", "--sky-prob", "1.5"))


def test_grown_model_computes_what_the_checkpoint_computed(images: Path, tmp_path: Path) -> None:
    import torch

    from lir.network import LIR, LIRConfig

    small = tmp_path / "small"
    assert train.main(_args(images, small, "--steps", "2")) == 0
    grown_cfg = {"dim": 16, "left_blk_num": [1, 2], "bottom_blk_num": 2, "right_blk_num": [2, 1]}
    sd = load_file(str(small / "ema.safetensors"))
    before = LIR.from_config(LIRConfig(dim=16, left_blk_num=(1, 1), bottom_blk_num=1, right_blk_num=(1, 1)))
    before.load_state_dict(sd)
    grown = LIR.from_config(LIRConfig.from_dict(grown_cfg))
    grown.load_state_dict(train.grown_state_dict(grown, sd))
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(grown.eval()(x), before.eval()(x), rtol=0, atol=1e-6)

    # Through train.py: the grown run records where it came from and trains the added blocks.
    out = tmp_path / "grown"
    assert train.main(_args(images, out, "--steps", "2", "--init-from", str(small / "ema.safetensors"),
                            "--config", json.dumps(grown_cfg))) == 0
    with safe_open(str(out / "ema.safetensors"), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"])["left_blk_num"] == [1, 2]
    assert json.loads(meta["started_from"])["grown_from_config"]["left_blk_num"] == [1, 1]
    raw = load_file(str(out / "state.safetensors"))
    assert raw["model/EAA2.1.transpose.weight"].abs().sum() > 0

    damaged = {k: v for k, v in sd.items() if k != "EAA1.0.transpose.weight"}
    with pytest.raises(SystemExit, match="EAA1.0.transpose.weight"):
        train.grown_state_dict(grown, damaged)

    wider = json.dumps({**grown_cfg, "dim": 32})
    with pytest.raises(SystemExit, match="keeps the width"):
        train.main(_args(images, tmp_path / "h", "--init-from", str(small / "ema.safetensors"), "--config", wider))


def test_l1_fft_loss_adds_a_tenth_of_the_spectrum_l1() -> None:
    # a constant error d puts d*H*W into the DC coefficient and nothing elsewhere
    h, w, d = 8, 10, 0.02
    out, target = torch.full((1, 1, h, w), 0.5 + d), torch.full((1, 1, h, w), 0.5)
    fake = SimpleNamespace(args=SimpleNamespace(loss="l1-fft"))
    got = train.Trainer.loss_fn(fake, out, target)  # type: ignore[arg-type]
    coefficients = h * (w // 2 + 1) * 2  # rfft2 bins, real and imaginary parts
    assert got.item() == pytest.approx(d + 0.1 * d * h * w / coefficients, rel=1e-4)


def test_l1_edge_loss_weighs_edges_by_edge_weight_and_not_flat_offsets() -> None:
    fake = SimpleNamespace(args=SimpleNamespace(loss="l1-edge", edge_weight=1.0))
    target = torch.full((1, 3, 12, 12), 0.5)
    # a constant offset has no high-pass part: the loss is the pixel L1 alone
    flat = train.Trainer.loss_fn(fake, target + 0.02, target)  # type: ignore[arg-type]
    assert flat.item() == pytest.approx(0.02, rel=1e-5)
    # a one-pixel-wide line (a thin streak) is mostly high-pass: it costs more than its pixel L1
    line = target.clone()
    line[..., :, 6] += 0.2
    pixel = F.l1_loss(line, target).item()
    assert train.Trainer.loss_fn(fake, line, target).item() > 1.5 * pixel
    # --edge-weight scales the high-pass term only
    edge = train.high_pass(line - target).abs().mean().item()
    fake.args.edge_weight = 3.0
    weighted = train.Trainer.loss_fn(fake, line, target)  # type: ignore[arg-type]
    assert weighted.item() == pytest.approx(pixel + 3.0 * edge, rel=1e-5)
