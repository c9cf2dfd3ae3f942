"""lir: restore degraded photos (noise, blur, rain, haze) with the LIR network (ACM MM 2024)."""

from .network import LIR, LIRConfig

__all__ = ["LIR", "LIRConfig"]
__version__ = "0.1.0"
