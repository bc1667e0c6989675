"""CAM formulas: one small batched function per method.

Notation: ``A`` is the layer's activation ``[B, C, h, w]`` (channel ``k``,
position ``ij``), ``g = ∂y^c/∂A`` the gradient of the target score ``y^c``
with respect to it, ``Z = h·w``. Every function returns the map before the
final ReLU, ``[B, h, w]``; :func:`attnviz.cam.compute_cam` applies the ReLU,
resizing and normalisation. Everything is tensor ops over the whole batch: no
loops over images, no host round-trips.

Gradient methods (one gradient of the summed target scores serves all of
them): ``gradcam``, ``gradcam++``, ``xgradcam``, ``layercam``, ``hirescam``.
Activation-only: ``eigencam``. Weights from elsewhere: ``cam`` (classifier
weights, :mod:`attnviz.cam.head`), ``scorecam`` (masked forwards,
:mod:`attnviz.cam.scorecam`), ``ablationcam`` (ablated channels,
:mod:`attnviz.cam.ablation`), ``smoothgradcam++`` (noisy copies,
:mod:`attnviz.cam.smoothgrad`).

``eigen_smooth=True`` (pytorch-grad-cam's option) replaces the channel sum
``Σ_k (w ⊙ A)^k`` of every method by the first principal component of the weighted
activations ``w ⊙ A`` (:func:`first_component`), which removes the noise the other
components carry.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ACTIVATION_METHODS",
    "GRADIENT_METHODS",
    "METHODS",
    "combine",
    "eigencam",
    "first_component",
    "gradcam",
    "gradcam_pp",
    "hirescam",
    "layercam",
    "weighted_sum",
    "xgradcam",
]


def weighted_sum(weights: Tensor, acts: Tensor) -> Tensor:
    """``Σ_k w_k A^k``: channel weights ``[B, C]`` applied to ``[B, C, h, w]`` → ``[B, h, w]``."""
    return torch.einsum("bc,bchw->bhw", weights.to(acts.dtype), acts)


def combine(weights: Tensor, acts: Tensor, eigen_smooth: bool = False) -> Tensor:
    """The map from weights ``[B, C]`` (per channel) or ``[B, C, h, w]`` (per element).

    ``Σ_k (w ⊙ A)^k``, or with ``eigen_smooth`` the first principal component of
    ``w ⊙ A`` (:func:`first_component`).
    """
    if not eigen_smooth:
        if weights.ndim == 2:
            return weighted_sum(weights, acts)
        return (weights.to(acts.dtype) * acts).sum(dim=1)
    w = weights.to(acts.dtype)
    return first_component(w[:, :, None, None] * acts if w.ndim == 2 else w * acts)


def first_component(values: Tensor) -> Tensor:
    """Projection of every position on the first principal component of ``values`` ``[B, C, h, w]``.

    Per image, the ``h·w`` positions are samples of ``C`` features: centre each
    channel over the positions, take the SVD ``X = U S Vᵀ`` and project every
    position on the first right-singular vector, ``map = X v₁`` (pytorch-grad-cam's
    ``get_2d_projection``). With fewer than 2 positions the map is zeros.

    The sign of ``v₁`` is arbitrary (an SVD may return ``-v₁``; pytorch-grad-cam
    keeps whatever LAPACK gives, which inverts some heatmaps after the ReLU). Here
    the sign is fixed per image so that the map correlates positively with the
    channel sum ``Σ_k values^k`` (for Eigen-CAM the layer's total activation, for
    ``eigen_smooth`` the method's ordinary map); a map uncorrelated with it keeps
    the SVD's sign.
    """
    b, _, h, w = values.shape
    if h * w < 2:
        return torch.zeros(b, h, w, dtype=values.dtype, device=values.device)
    x = values.flatten(2).transpose(1, 2)  # [B, hw, C]
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    proj = (x @ vh[:, 0, :, None]).squeeze(-1)  # [B, hw]
    total = values.sum(dim=1).flatten(1)
    corr = (proj * (total - total.mean(dim=1, keepdim=True))).sum(dim=1, keepdim=True)
    sign = torch.where(corr < 0, -1.0, 1.0).to(proj.dtype)
    return (proj * sign).view(b, h, w)


def gradcam(acts: Tensor, grads: Tensor, eigen_smooth: bool = False) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391).

    ``w_k = (1/Z) Σ_ij g^k_ij``, map ``Σ_k w_k A^k``: channels weighted by their
    spatially averaged gradient.
    """
    return combine(grads.mean(dim=(2, 3)), acts, eigen_smooth)


def gradcam_pp(acts: Tensor, grads: Tensor, eigen_smooth: bool = False) -> Tensor:
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv:1710.11063), Eq. 19 with the exp trick.

    With ``Y^c = exp(y^c)`` the higher derivatives become powers of ``g``, and

        α^k_ij = g² / (2g² + Σ_ab A^k_ab · g³),    w_k = Σ_ij α^k_ij ReLU(g^k_ij),

    map ``Σ_k w_k A^k``. Where ``g ≠ 0`` this is exactly
    ``α = 1 / (2 + Σ_ab A^k_ab · g_ij)``, which is what is computed: no absolute
    ``eps`` (pytorch-grad-cam adds ``1e-6`` to the denominator, which dominates
    whenever ``g² ≲ 1e-6``, i.e. for most channels of a typical network, and
    changes the map with the scale of the logits), no underflow of ``g²``/``g³``.
    ``α = 0`` where ``g = 0`` (as in the paper's ReLU'd Eq. 7) or where the
    denominator is exactly 0.

    Note that Eq. 19 itself depends on the scale of the score (``α`` involves
    ``Σ A · g`` unsquared): multiplying the logits by ``s`` gives
    ``α = 1/(2 + s·Σ A·g)``. That is the method, not numerical error.
    """
    den = 2 + acts.sum(dim=(2, 3), keepdim=True) * grads
    usable = (grads != 0) & (den != 0)
    alpha = torch.where(usable, 1 / torch.where(usable, den, 1), 0)
    return combine((alpha * grads.clamp(min=0)).sum(dim=(2, 3)), acts, eigen_smooth)


def xgradcam(acts: Tensor, grads: Tensor, eigen_smooth: bool = False) -> Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312).

    ``w_k = Σ_ij (A^k_ij / Σ_ab A^k_ab) g^k_ij``, map ``Σ_k w_k A^k``; a channel
    whose activations sum to 0 gets weight 0.
    """
    total = acts.sum(dim=(2, 3))
    nonzero = total != 0
    weights = (grads * acts).sum(dim=(2, 3)) / torch.where(nonzero, total, 1)
    return combine(torch.where(nonzero, weights, 0), acts, eigen_smooth)


def layercam(acts: Tensor, grads: Tensor, eigen_smooth: bool = False) -> Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021): ``Σ_k ReLU(g^k_ij) A^k_ij`` (element-wise weights)."""
    return combine(grads.clamp(min=0), acts, eigen_smooth)


def hirescam(acts: Tensor, grads: Tensor, eigen_smooth: bool = False) -> Tensor:
    """HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891): ``Σ_k g^k_ij A^k_ij``.

    Element-wise gradient times activation, summed over channels: the map is
    faithful to what the model computes at that layer (no averaging of ``g``).
    """
    return combine(grads, acts, eigen_smooth)


def eigencam(acts: Tensor) -> Tensor:
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299): first principal component.

    :func:`first_component` of the activations: no gradient and no target, the map
    is class-agnostic. Its sign is fixed so that the map correlates positively with
    ``Σ_k A^k`` (the direction where the layer is "on"), not left to the SVD.
    """
    return first_component(acts)


#: name → function of (activations, gradients)
GRADIENT_METHODS = {
    "gradcam": gradcam,
    "gradcam++": gradcam_pp,
    "xgradcam": xgradcam,
    "layercam": layercam,
    "hirescam": hirescam,
}
#: name → function of activations only
ACTIVATION_METHODS = {"eigencam": eigencam}
#: every method name compute_cam accepts
METHODS = (
    *GRADIENT_METHODS,
    "cam",
    "scorecam",
    *ACTIVATION_METHODS,
    "ablationcam",
    "smoothgradcam++",
)
