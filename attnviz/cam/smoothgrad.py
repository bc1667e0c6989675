"""SmoothGrad-CAM++ channel weights, as torchcam's ``SmoothGradCAMpp`` computes them.

Smooth Grad-CAM++ (Omeiza et al., 2019, arXiv:1908.01224) averages the gradient
powers of Grad-CAM++ over ``n`` noisy copies ``x + ε_m`` of the image,
``ε_m ~ N(0, std²)``: with ``ĝ² = (1/n) Σ_m g_m²`` and ``ĝ³ = (1/n) Σ_m g_m³``,

    α_ij = ĝ²_ij / (2 ĝ²_ij + Σ_ab ĝ³_ab A_ab),    w_k = Σ_ij α^k_ij ReLU(g^k_n,ij),

and the map is ``Σ_k w_k A^k_n``. This is torchcam 0.5's definition, reproduced
exactly so that its users get the same maps (its defaults: ``n=4``, ``std=0.3``):

* ``A`` in ``α`` is the clean image's activation, but the gradient in the ReLU and the
  activation ``A_n`` the weights are applied to come from the *last* noisy copy
  (torchcam's hooks keep the last forward's values);
* the denominator sums ``ĝ³·A`` over the positions, where Grad-CAM++'s Eq. 19
  (``gradcam++`` here) multiplies ``ĝ³`` at the position by ``Σ_ab A_ab``;
* no ``eps``: ``α = 0`` where ``ĝ² = 0`` (torchcam adds ``1e-8`` to the denominator,
  which matters only where the gradients are that small).

The noise is drawn on the CPU from ``torch.Generator().manual_seed(seed)``, one
``[B, C, H, W]`` draw per copy in order, ``torch.normal(0, std, ...)``: the values
torchcam draws after ``torch.manual_seed(seed)`` (it samples on the CPU, then moves
the noise to the model's device). Each noisy copy is one forward and one gradient
of the batch (of each ``batch_size`` chunk), shared by all layers of the call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["draw_noise", "smoothgrad_weights"]

Sample = Callable[[Tensor], tuple[list[Tensor], list[Tensor]]]


def draw_noise(shape: Sequence[int], samples: int, std: float, seed: int) -> Tensor:
    """``[samples, *shape]`` Gaussian noise on the CPU, drawn copy by copy (see the module docstring)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.stack(
        [torch.normal(0.0, float(std), tuple(shape), generator=gen) for _ in range(samples)]
    )


def smoothgrad_weights(
    sample: Sample, images: Tensor, noise: Tensor, clean: Sequence[Tensor]
) -> list[tuple[Tensor, Tensor]]:
    """``(weights [B, C], activation to weight [B, C, h, w])`` per layer.

    ``sample(x)`` runs the model on ``x`` and returns each layer's activation and
    the gradient of the summed target scores with respect to it; ``noise`` is
    ``[n, B, C, H, W]``; ``clean`` the layers' activations on ``images``.
    """
    g2 = [torch.zeros_like(a) for a in clean]
    g3 = [torch.zeros_like(a) for a in clean]
    last_acts: list[Tensor] = list(clean)
    last_grads: list[Tensor] = [torch.zeros_like(a) for a in clean]
    for eps in noise:
        acts, grads = sample(images + eps.to(images.device, images.dtype))
        for i, g in enumerate(grads):
            g2[i] += g.pow(2)
            g3[i] += g.pow(3)
        last_acts, last_grads = acts, grads
    n = noise.shape[0]
    out = []
    for s2, s3, a, g, a_last in zip(g2, g3, clean, last_grads, last_acts):
        s2, s3 = s2 / n, s3 / n
        den = 2 * s2 + (s3 * a).sum(dim=(2, 3), keepdim=True)
        usable = (s2 > 0) & (den != 0)
        alpha = torch.where(usable, s2 / torch.where(usable, den, 1), 0)
        out.append(((alpha * g.clamp(min=0)).sum(dim=(2, 3)), a_last))
    return out
