"""lir: restore degraded photos (noise, blur, rain, haze) with the LIR network (ACM MM 2024).

    import lir
    clean = lir.restore(img, task="denoise")   # PIL / numpy / torch / path in, same kind out

Nothing here touches the network; checkpoints are fetched on first use (see `lir.weights`).
"""

from .checkpoint import convert_checkpoint
from .manifest import TASKS, list_models
from .network import LIR, LIRConfig
from .restorer import Restorer, load_model, restore

__all__ = ["LIR", "LIRConfig", "Restorer", "TASKS", "convert_checkpoint", "list_models", "load_model", "restore"]
__version__ = "0.1.0"
