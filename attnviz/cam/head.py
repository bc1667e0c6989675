"""The classifier weights for CAM: the final ``nn.Linear`` applied after global average pooling.

CAM (Zhou et al., CVPR 2016, arXiv:1512.04150) needs a model whose output is
``fc(GAP(A))``: then ``y^c = (1/Z) Σ_ij Σ_k W_ck A^k_ij + b_c`` and the map
``Σ_k W_ck A^k`` shows where that sum comes from. The structure is checked on
the actual values rather than guessed from module names: a candidate ``Linear``
(``C`` inputs, one output per class; the last such module first) is accepted
only if ``fc(A.mean((2, 3)))`` reproduces the model's output on the batch. That
catches a wrong layer (``layer3``), an extra head layer, max pooling or a
normalisation after the pooling, with the same test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AttnvizError

__all__ = ["gap_fc_weight"]


def gap_fc_weight(model: nn.Module, acts: Tensor, output: object, layer: str) -> Tensor:
    """The weight ``[classes, C]`` of the Linear with ``output == fc(acts.mean((2, 3)))``."""
    if not isinstance(output, Tensor) or output.ndim != 2:
        what = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise AttnvizError(f"method 'cam' needs a classifier output [batch, classes], got {what}")
    channels, classes = acts.shape[1], output.shape[1]
    candidates = [
        m
        for m in model.modules()
        if isinstance(m, nn.Linear) and m.in_features == channels and m.out_features == classes
    ]
    pooled = acts.detach().mean(dim=(2, 3))
    target = output.detach()
    tol = max(1e-4, 100 * torch.finfo(target.dtype).eps) * max(1.0, float(target.abs().amax()))
    for fc in reversed(candidates):
        pred = F.linear(pooled.to(fc.weight.dtype), fc.weight, fc.bias)
        if float((pred.to(target.dtype) - target).abs().amax()) <= tol:
            return fc.weight.detach()
    found = (
        f"the Linear layers with {channels} inputs and {classes} outputs do not reproduce the "
        "output from the average-pooled activations"
        if candidates
        else f"no nn.Linear with {channels} inputs and {classes} outputs"
    )
    raise AttnvizError(
        f"method 'cam' needs a model whose output is Linear(global-average-pool({layer!r})); "
        f"{found}. Use the last convolutional stage as the layer, or a gradient method "
        "('gradcam' equals CAM up to scale on such models)"
    )
