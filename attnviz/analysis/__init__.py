"""Before/after comparisons of models: :func:`compare` and its :class:`Comparison`."""

from .compare import CAM_METHODS, compare
from .comparison import Comparison
from .outputs import write_outputs

__all__ = ["CAM_METHODS", "Comparison", "compare", "write_outputs"]
