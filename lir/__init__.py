"""lir: restore degraded photos (noise, blur, rain, haze) with the LIR network (ACM MM 2024).

    import lir
    clean = lir.restore(img, task="denoise")   # PIL / numpy / torch / path in, same kind out

Nothing here touches the network; checkpoints are fetched on first use (see `lir.weights`).
"""

from typing import TYPE_CHECKING, Any

from .checkpoint import convert_checkpoint
from .manifest import TASKS, list_models
from .network import LIR, LIRConfig
from .restorer import Restorer, load_model, restore

if TYPE_CHECKING:
    from .onnx_export import export_onnx

__all__ = [
    "LIR",
    "LIRConfig",
    "Restorer",
    "TASKS",
    "convert_checkpoint",
    "export_onnx",
    "list_models",
    "load_model",
    "restore",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # lir.export_onnx is resolved on first use, so `import lir` stays free of the ONNX stack.
    if name == "export_onnx":
        from .onnx_export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'lir' has no attribute {name!r}")
