"""Class activation maps in torch: batched, hook-free, one forward for many methods and layers.

>>> import torch, torchvision
>>> from attnviz.cam import compute_cam
>>> net = torchvision.models.resnet18(num_classes=10).eval()
>>> r = compute_cam(net, torch.randn(2, 3, 64, 64), "layer4", "gradcam++")
>>> tuple(r.maps.shape)
(2, 64, 64)

:func:`compute_cam` computes Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM,
HiResCAM, CAM, Score-CAM, Eigen-CAM, Ablation-CAM and SmoothGrad-CAM++ (formulas
in :mod:`attnviz.cam.methods`), with pytorch-grad-cam's ``aug_smooth`` and
``eigen_smooth`` options and target objects, and returns a :class:`CamResult`
(``.show()`` draws it); :func:`normalize_shared` puts maps of several models on
one scale.
"""

from .._maps import minmax, resize_maps
from ._cache import clear_cache
from .engine import compute_cam
from .methods import METHODS
from .normalize import normalize_shared
from .result import CamResult
from .targets import SegmentationTarget, SoftmaxTarget

__all__ = [
    "METHODS",
    "CamResult",
    "SegmentationTarget",
    "SoftmaxTarget",
    "clear_cache",
    "compute_cam",
    "minmax",
    "normalize_shared",
    "resize_maps",
]
