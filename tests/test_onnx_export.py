"""Tests of lir.onnx_export and `lir export-onnx`: a small network exported, then run with onnxruntime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import lir
from lir import tiling
from lir.cli import main
from lir.network import LIR, blocks
from lir.onnx_export import CHECK_SHAPES, OnnxExportReport, ShapeCheck, export_onnx

# One EAA block holds every kind of layer (filters, patch attention at both patch sizes, channel
# attention, transposed convolutions); fewer blocks keep the export, the slow part, short.
TINY = dict(dim=16, left_blk_num=(1, 0), bottom_blk_num=0, right_blk_num=(0, 0))
ROOT = Path(__file__).resolve().parents[1]
TORCH_THREADS = 2
pytestmark = pytest.mark.usefixtures("torch_threads")  # conftest


@pytest.fixture(scope="module")
def weights(make_weights) -> str:
    return make_weights(**TINY)


@pytest.fixture(scope="module")
def network(weights) -> LIR:
    return lir.load_model(weights=weights, device="cpu", dtype=torch.float32).network


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory) -> OnnxExportReport:
    # Empty caches: the trace is the first to ask for the filter constants (see the last test).
    blocks.filter_bank.cache_clear()
    blocks.blur_taps.cache_clear()
    return export_onnx(tmp_path_factory.mktemp("onnx") / "sub" / "tiny.onnx", weights=weights)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_report_and_checks(exported, weights):
    assert exported.path.is_file() and exported.model == weights and exported.task == "denoise"
    assert exported.opset == 18 and exported.tolerance == 1e-4
    assert [c.shape for c in exported.checks] == [(n, 3, h, w) for n, h, w in CHECK_SHAPES]
    assert all(0 <= c.max_abs_diff <= 1e-4 for c in exported.checks), exported.checks
    assert exported.passed and exported.max_abs_diff == max(c.max_abs_diff for c in exported.checks)


def test_graph_has_dynamic_axes_opset_and_metadata(exported):
    model = onnx.load(str(exported.path))
    onnx.checker.check_model(model)
    assert [(o.domain, o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")] == [("", 18)]
    for value in (model.graph.input[0], model.graph.output[0]):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"], (value.name, dims)
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["output"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["lir.task"] == "denoise" and '"dim": 16' in meta["lir.config"]
    assert "multiples of 32" in meta["lir.input"]
    assert not list(exported.path.parent.glob("*.data"))  # the weights are inside the file


def test_other_sizes_and_batches_match_pytorch(exported, network):
    session = _session(exported.path)
    for n, h, w in ((3, 192, 224), (1, 128, 128), (2, 288, 160)):
        x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.inference_mode():
            expected = network(x).numpy()
        got = session.run(["output"], {"input": x.numpy()})[0]
        assert got.shape == (n, 3, h, w)
        assert np.abs(got - expected).max() <= 1e-4, (n, h, w)


def test_padded_graph_output_matches_restore(exported, weights):
    # The documented recipe for other sizes: pad with lir.tiling, run the graph, crop back.
    image = np.random.default_rng(0).random((70, 90, 3)).astype(np.float32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    padded, size = tiling.pad_to_valid(x)
    y = _session(exported.path).run(["output"], {"input": padded.numpy()})[0]
    restored = tiling.crop(torch.from_numpy(y), size)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    expected = lir.restore(image, weights=weights, device="cpu", dtype=torch.float32, tile=None)
    assert np.abs(restored - expected).max() <= 1e-4


def test_export_leaves_the_cached_filter_constants_real(exported, network):
    # The trace asked for the filter constants first; its fake tensors must not stay behind.
    assert type(blocks.filter_bank(torch.float32, torch.device("cpu"))) is torch.Tensor
    assert type(blocks.blur_taps(torch.float32, torch.device("cpu"))) is torch.Tensor
    with torch.inference_mode():
        assert torch.isfinite(network(torch.rand(1, 3, 128, 128))).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"check_shapes": [(1, 100, 128)]}, "multiples of 32"),
        ({"check_shapes": [(1, 96, 128)]}, "at least 128"),
        ({"check_shapes": [(0, 128, 128)]}, "batch must be at least 1"),
        ({"check_shapes": [(128, 128)]}, r"\(batch, height, width\)"),
        ({"check_shapes": []}, "non-empty"),
        ({"opset": 17}, "opset must be an int from 18"),
        ({"opset": 10_000}, "opset must be an int from 18"),
        ({"tolerance": -1.0}, "tolerance"),
    ],
)
def test_bad_arguments_are_refused_before_export(weights, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(tmp_path / "x.onnx", weights=weights, **kwargs)
    assert not (tmp_path / "x.onnx").exists()


def test_cli_exports_and_prints_the_differences(weights, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    code = main(["export-onnx", str(out), "--weights", weights])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert out.is_file()
    assert "2×3×128×160: max abs diff" in printed.out and "1×3×256×192: max abs diff" in printed.out
    assert "passed" in printed.out


def test_cli_fails_when_the_check_fails(weights, tmp_path, capsys, monkeypatch):
    failing = OnnxExportReport(path=tmp_path / "f.onnx", model=weights, task="denoise", opset=18,
                               checks=(ShapeCheck((2, 3, 128, 160), 3e-3),), tolerance=1e-4, seconds=1.0)
    (tmp_path / "f.onnx").write_bytes(b"")
    monkeypatch.setattr("lir.onnx_export.export_onnx", lambda *a, **k: failing)
    code = main(["export-onnx", str(tmp_path / "f.onnx"), "--weights", weights])
    printed = capsys.readouterr()
    assert code == 1
    assert "2×3×128×160: max abs diff 3.00e-03" in printed.out and "check failed" in printed.err


def test_cli_usage_errors(weights, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export-onnx", str(tmp_path / "x.onnx"), "--weights", weights, "--opset", "12"])
    assert exc.value.code == 2 and "--opset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export-onnx", str(tmp_path), "--weights", weights])
    assert exc.value.code == 2 and "is a folder" in capsys.readouterr().err
    assert main(["export-onnx", str(tmp_path / "x.onnx"), "--weights", str(tmp_path / "missing.safetensors")]) == 1
    assert "export failed: FileNotFoundError" in capsys.readouterr().err


def test_cli_says_how_to_install_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert main(["export-onnx", str(tmp_path / "x.onnx")]) == 1
    assert 'pip install "lir-restore[onnx]"' in capsys.readouterr().err
    with pytest.raises(ImportError, match="lir-restore"):
        export_onnx(tmp_path / "x.onnx")


def test_importing_lir_imports_no_onnx_or_ray() -> None:
    code = (
        "import sys, lir, lir.cli; lir.cli.build_parser(); f = lir.export_onnx; "
        "heavy = ('onnx', 'onnxruntime', 'onnxscript', 'onnx_ir', 'ray', 'pyarrow'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    assert lir.export_onnx is export_onnx and "export_onnx" in lir.__all__
