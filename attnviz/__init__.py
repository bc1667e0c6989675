"""attnviz: what does channel attention change inside a CNN?

Insert attention blocks into any CNN keeping its weights (:func:`insert_attention`),
capture intermediate values without hooks (:func:`with_intermediates`), and
compare models before and after attention.
"""

from ._version import __version__
from .analysis import Comparison, compare
from .blocks import Gate, attention_block, list_attention, register_attention
from .cam import CamResult, compute_cam, normalize_shared
from .errors import AttnvizError, FileFormatError, SurgeryError, UntrustedCodeError
from .intermediates import list_intermediates, with_intermediates
from .serialization import load, load_base_weights, load_weights, read_spec, save
from .surgery import (
    ReplacedWeightsWarning,
    apply_surgery,
    attention_keys,
    attention_modules,
    base_reference,
    insert_attention,
    remove_attention,
    surgery_spec,
)
from .zoo import create_model

__all__ = [
    "AttnvizError",
    "CamResult",
    "Comparison",
    "FileFormatError",
    "Gate",
    "ReplacedWeightsWarning",
    "SurgeryError",
    "UntrustedCodeError",
    "__version__",
    "apply_surgery",
    "attention_block",
    "attention_keys",
    "attention_modules",
    "base_reference",
    "compare",
    "compute_cam",
    "create_model",
    "insert_attention",
    "list_attention",
    "list_intermediates",
    "load",
    "load_base_weights",
    "load_weights",
    "normalize_shared",
    "read_spec",
    "register_attention",
    "remove_attention",
    "save",
    "surgery_spec",
    "with_intermediates",
]
