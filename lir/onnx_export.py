"""Exporting a restoration model to ONNX: `export_onnx` (also ``lir export-onnx``).

The graph is the network's fast inference form in float32 with dynamic batch, height and width:
input ``"input"``, float32 N×3×H×W RGB in [0, 1]; output ``"output"``, the same shape. H and W must
be multiples of 32 and at least 128, as for the network itself: pad other sizes first and crop the
result back (`lir.tiling.pad_to_valid` and `lir.tiling.crop` do it in Python: reflection padding,
centred, the odd pixel at the bottom/right). Tiling and the uint8/PIL conversions of `lir.restore`
are not in the graph.

Needs the ``onnx`` extra (``pip install "lir-restore[onnx]"``: onnx, onnxruntime, onnxscript);
``import lir`` never imports any of them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Union

import torch

from lir.network import LIR, MIN_SIZE, SIZE_MULTIPLE, check_input_size

__all__ = ["export_onnx", "OnnxExportReport", "ShapeCheck", "DEFAULT_OPSET", "TOLERANCE", "CHECK_SHAPES"]

DEFAULT_OPSET = 18
"""Opset of the exported graph. 18 is the lowest the torch.export-based exporter writes; every operator
the graph uses (LayerNormalization since 17; GELU stays Erf arithmetic, which onnxruntime fuses back)
has kernels in onnxruntime's CPU and CUDA providers from onnxruntime 1.14 on (checked here on the CPU
provider only). Opset 20 would write GELU as a Gelu node, which older onnxruntime builds lack."""

TOLERANCE = 1e-4
"""Largest accepted difference between onnxruntime's and PyTorch's float32 outputs."""

CHECK_SHAPES: tuple[tuple[int, int, int], ...] = ((2, 128, 160), (1, 256, 192))
"""(batch, height, width) the exported graph is checked at. Neither is the traced example's shape
(`_EXAMPLE`), so the check shows that the batch, height and width axes really are dynamic."""

_EXAMPLE = (2, 160, 128)  # batch 2: torch.export would specialise a batch of 1; H != W: no H == W guard
_INSTALL = 'pip install "lir-restore[onnx]"'


@dataclass(frozen=True)
class ShapeCheck:
    """One check of the exported graph: onnxruntime (CPU) against PyTorch on the same random input.

    Attributes:
        shape: (N, C, H, W) of the input.
        max_abs_diff: largest absolute difference between the two float32 outputs.
    """

    shape: tuple[int, int, int, int]
    max_abs_diff: float


@dataclass(frozen=True)
class OnnxExportReport:
    """What `export_onnx` wrote and how well the graph matched PyTorch.

    Attributes:
        path: the ``.onnx`` file (weights inside it, no external data file).
        model: where the weights came from (manifest model name or file path).
        task: the task the model was loaded for.
        opset: the graph's ONNX opset.
        checks: one `ShapeCheck` per checked input shape.
        tolerance: the largest accepted ``max_abs_diff``.
        seconds: time taken by the export itself (without the checks).
    """

    path: Path
    model: str
    task: str
    opset: int
    checks: tuple[ShapeCheck, ...]
    tolerance: float
    seconds: float

    @property
    def max_abs_diff(self) -> float:
        """The largest difference over all checks."""
        return max(c.max_abs_diff for c in self.checks)

    @property
    def passed(self) -> bool:
        """Whether every check is within `tolerance` (a NaN difference fails)."""
        return all(c.max_abs_diff <= self.tolerance for c in self.checks)


def _import_onnx_runtime() -> ModuleType:
    """onnxruntime, after checking the whole ONNX stack is installed (else an ImportError saying how)."""
    try:
        import onnx  # noqa: F401 - the exporter needs it; fail here with the install hint
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"exporting to ONNX needs onnx, onnxruntime and onnxscript: {_INSTALL} ({exc})") from exc
    return onnxruntime


def _check_shapes(shapes: Sequence[Sequence[int]]) -> tuple[tuple[int, int, int], ...]:
    """Validate (batch, height, width) triples before any work."""
    if isinstance(shapes, (str, bytes)) or not isinstance(shapes, Sequence) or not shapes:
        raise ValueError(f"check_shapes must be a non-empty sequence of (batch, height, width); got {shapes!r}")
    checked = []
    for shape in shapes:
        if (isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)):
            raise ValueError(f"each check shape must be (batch, height, width) as ints; got {shape!r}")
        batch, height, width = shape
        if batch < 1:
            raise ValueError(f"check shape {tuple(shape)}: batch must be at least 1")
        check_input_size(height, width)  # the graph's contract: multiples of 32, at least 128
        checked.append((batch, height, width))
    return tuple(checked)


def _check_opset(opset: int) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not DEFAULT_OPSET <= opset <= newest:
        raise ValueError(
            f"opset must be an int from {DEFAULT_OPSET} (the lowest torch.onnx's exporter writes) to {newest} "
            f"(the newest this onnx knows); got {opset!r}"
        )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's notices about operators this graph never uses off the user's terminal."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch-internal pytree deprecations
            yield
    finally:
        logger.setLevel(level)


def _export(network: LIR, path: Path, opset: int, metadata: Mapping[str, str]) -> None:
    from torch.export import Dim

    # torch.onnx.export(dynamo=True), the default since torch 2.9, traces with torch.export and needs
    # onnxscript. The TorchScript exporter (dynamo=False) cannot export this network with dynamic
    # sizes: LayerNorm's normalized shape comes from x.shape[1], which it refuses as non-constant.
    # Height and width are declared as 32·k so the network's size check holds for every k >= 4.
    batch = Dim("batch", min=1)
    rows = Dim("height_32", min=MIN_SIZE // SIZE_MULTIPLE)
    cols = Dim("width_32", min=MIN_SIZE // SIZE_MULTIPLE)
    channels = network.config.img_channel
    n, h, w = _EXAMPLE
    example = torch.rand(n, channels, h, w, generator=torch.Generator().manual_seed(0))
    with _quiet_exporter():
        program = torch.onnx.export(
            network,
            (example,),
            dynamo=True,
            dynamic_shapes={"x": {0: batch, 2: SIZE_MULTIPLE * rows, 3: SIZE_MULTIPLE * cols}},
            input_names=["input"],
            output_names=["output"],
            opset_version=opset,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    if program is None:  # only None for dynamo=False
        raise RuntimeError("torch.onnx.export returned no program")
    import onnx_ir  # the exporter's own graph library (an onnxscript dependency)

    # Name the symbolic sizes for users of the graph (the trace calls them "32*height_32", ...).
    for value in (*program.model.graph.inputs, *program.model.graph.outputs):
        value.shape = onnx_ir.Shape(["batch", channels, "height", "width"])
    # The exporter tags every node with its Python module path and stack trace: 40 % of the file,
    # and local paths nobody deploying the graph needs.
    for node in program.model.graph.all_nodes():
        node.metadata_props.clear()
    program.model.metadata_props.update(metadata)
    program.save(str(path), external_data=False)


def _check(network: LIR, path: Path, shapes: Sequence[tuple[int, int, int]]) -> tuple[ShapeCheck, ...]:
    import numpy as np

    ort = _import_onnx_runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    checks = []
    channels = network.config.img_channel
    generator = torch.Generator().manual_seed(1)
    for n, h, w in shapes:
        x = torch.rand(n, channels, h, w, generator=generator)
        with torch.inference_mode():
            expected = network(x).numpy()
        got = session.run(["output"], {"input": x.numpy()})[0]
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        checks.append(ShapeCheck(shape=(n, channels, h, w), max_abs_diff=diff))
    return tuple(checks)


def export_onnx(
    path: Union[str, os.PathLike],
    task: str = "denoise",
    *,
    weights: Union[str, os.PathLike, Mapping[str, torch.Tensor], None] = None,
    opset: int = DEFAULT_OPSET,
    check_shapes: Sequence[Sequence[int]] = CHECK_SHAPES,
    tolerance: float = TOLERANCE,
) -> OnnxExportReport:
    """Export a model to ONNX and check the graph against PyTorch with onnxruntime.

    The graph is the network's fast inference form in float32, with dynamic batch, height and width.
    Input ``"input"``: float32 N×3×H×W, RGB in [0, 1], **H and W multiples of 32 and at least 128**,
    so pad other sizes first and crop the output back (`lir.tiling.pad_to_valid` / `lir.tiling.crop`:
    reflection padding, centred). Output ``"output"``: the restored N×3×H×W. The file holds its
    weights (no external data file) and metadata (``lir.task``, ``lir.model``, ``lir.config``,
    ``lir.input``).

    After writing the file, each ``check_shapes`` input (random, seeded) is run through onnxruntime's
    CPU provider and through PyTorch; `OnnxExportReport.passed` tells whether every maximum
    absolute difference is within ``tolerance``. The file is kept either way.

    Args:
        path: the ``.onnx`` file to write (its folder is created).
        task: "denoise", "deblur", "derain" or "dehaze": the task's default model unless ``weights``.
        weights: a ``.safetensors`` file, a manifest model name or a state dict (see `lir.load_model`).
        opset: ONNX opset, from `DEFAULT_OPSET` (18) up.
        check_shapes: (batch, height, width) to check at; height and width must meet the graph's
            size contract.
        tolerance: the largest accepted difference (default 1e-4).

    Returns:
        An `OnnxExportReport` (path, opset, one `ShapeCheck` per shape, ``passed``).

    Raises:
        ImportError: onnx, onnxruntime or onnxscript is not installed (``pip install "lir-restore[onnx]"``).
        ValueError: a bad opset, check shape or tolerance, or the loading errors of `lir.load_model`.
        torch.onnx.errors.OnnxExporterError: the exporter failed.

    Example:
        >>> report = lir.export_onnx("lir-denoise.onnx", task="denoise")  # doctest: +SKIP
        >>> report.passed, [c.max_abs_diff for c in report.checks]  # doctest: +SKIP
    """
    from lir import __version__
    from lir.restorer import load_model

    _import_onnx_runtime()
    _check_opset(opset)
    shapes = _check_shapes(check_shapes)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative number; got {tolerance!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the .onnx file to write")

    restorer = load_model(task, weights=weights, device="cpu", dtype=torch.float32)
    # A private copy in the plain layout: the export never touches a network someone else may run.
    network = copy.deepcopy(restorer.network).to(memory_format=torch.contiguous_format).eval()
    network.requires_grad_(False)
    metadata = {
        "lir.version": __version__,
        "lir.task": task,
        "lir.model": restorer.name,
        "lir.config": json.dumps(network.config.to_dict()),
        "lir.input": (f"float32 N×{network.config.img_channel}×H×W RGB in [0, 1]; H and W multiples of "
                      f"{SIZE_MULTIPLE}, at least {MIN_SIZE}: reflect-pad (centred), restore, crop back"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _export(network, path, opset, metadata)
    seconds = time.perf_counter() - start
    checks = _check(network, path, shapes)
    return OnnxExportReport(path=path, model=restorer.name, task=task, opset=opset, checks=checks,
                            tolerance=float(tolerance), seconds=seconds)
