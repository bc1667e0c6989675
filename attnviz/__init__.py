"""attnviz: what does channel attention change inside a CNN?

Insert attention blocks into any CNN keeping its weights (:func:`insert_attention`),
capture intermediate values without hooks (:func:`with_intermediates`), and
compare models before and after attention (:func:`compare`).

>>> import torch, torchvision, attnviz
>>> base = torchvision.models.resnet18(num_classes=10).eval()
>>> se = attnviz.insert_attention(base, "se", init="identity").eval()
>>> x = torch.randn(1, 3, 64, 64)
>>> bool(torch.equal(se(x), base(x)))
True

Names load their module on first use (``import attnviz`` imports no torch), so the
command line starts fast; see :mod:`attnviz._lazy`.
"""

from ._lazy import lazy_exports
from ._version import __version__

_NAMES = {
    # surgery and models
    "insert_attention": ".surgery",
    "apply_surgery": ".surgery",
    "remove_attention": ".surgery",
    "surgery_spec": ".surgery",
    "attention_modules": ".surgery",
    "attention_keys": ".surgery",
    "base_reference": ".surgery",
    "summary": ".surgery.summary",
    "create_model": ".zoo",
    "save": ".serialization",
    "load": ".serialization",
    "load_weights": ".serialization",
    "load_base_weights": ".serialization",
    "read_spec": ".serialization",
    # blocks
    "Gate": ".blocks",
    "attention_block": ".blocks",
    "list_attention": ".blocks",
    "register_attention": ".blocks",
    # intermediates and CAMs
    "with_intermediates": ".intermediates",
    "list_intermediates": ".intermediates",
    "CamResult": ".cam",
    "compute_cam": ".cam",
    "normalize_shared": ".cam",
    # comparisons
    "Comparison": ".analysis",
    "compare": ".analysis",
    # errors
    "AttnvizError": ".errors",
    "FileFormatError": ".errors",
    "SurgeryError": ".errors",
    "UntrustedCodeError": ".errors",
    "ReplacedWeightsWarning": ".surgery",
}
_SUBMODULES = (
    "analysis",
    "blocks",
    "cam",
    "data",
    "errors",
    "fileformats",
    "inputs",
    "intermediates",
    "metrics",
    "nets",
    "plots",
    "recipes",
    "serialization",
    "stats",
    "study",
    "surgery",
    "tensorboard",
    "training",
    "trust",
    "zoo",
)

__all__ = ["__version__", *sorted(_NAMES)]

__getattr__, __dir__ = lazy_exports(
    __name__, {**_NAMES, **dict.fromkeys(_SUBMODULES, "")}, globals()
)
