"""The passes of one chunk of images: one forward, one gradient, and each method's own passes.

:class:`ChunkRun` holds what every chunk of a :func:`~attnviz.cam.compute_cam` call
shares (the capturing wrapper, layers, methods, options); :meth:`ChunkRun.chunk`
runs the forward with the layers captured, the gradient of the summed target
scores with respect to all of them at once (when a method needs it), then each
method's map at each layer: the gradient and activation methods from those
alone, Score-CAM and Ablation-CAM with their masked or ablated copies,
SmoothGrad-CAM++ with one forward and gradient per noisy copy, shared by all layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._tail import LayerTail
from ..errors import CamError
from ..intermediates import IntermediateModel
from .ablation import ablation_weights
from .head import gap_fc_weight
from .methods import ACTIVATION_METHODS, GRADIENT_METHODS, combine
from .outputs import OutputChoice, select_output
from .result import Key
from .scorecam import scorecam_weights
from .smoothgrad import smoothgrad_weights
from .targets import TargetSpec

__all__ = ["SMOOTHGRAD", "Chunk", "ChunkRun", "Transform", "gradients", "need_index"]

SMOOTHGRAD = "smoothgradcam++"

Transform = Callable[[Tensor], Tensor]


class Chunk(NamedTuple):
    """The raw maps and per-image values of one chunk of images."""

    raw: dict[Key, Tensor]
    targets: Tensor | None
    scores: Tensor
    probs: Tensor | None


@dataclass(frozen=True)
class ChunkRun:
    """What every chunk of one call shares; :meth:`chunk` computes one chunk."""

    wrapper: IntermediateModel
    layers: list[str]
    methods: list[str]
    relu: bool
    output: OutputChoice
    transform: Transform | None
    eigen_smooth: bool
    tails: dict[str, LayerTail]
    derived_chunk: int
    score_mode: str

    def chunk(self, x: Tensor, spec: TargetSpec, noise: Tensor | None) -> Chunk:
        methods = self.methods
        need_grad = SMOOTHGRAD in methods or any(m in GRADIENT_METHODS for m in methods)
        with torch.enable_grad() if need_grad else torch.no_grad():
            xin = fresh_input(x, need_grad)
            out, feats = self.wrapper(xin)
            selected = select_output(out, self.output)
            raws = [feats[name] for name in self.layers]
            index, scores = spec.scores(selected)
            grads = gradients(scores, raws) if need_grad else [None] * len(raws)
        values = {k: v.detach() if isinstance(v, Tensor) else v for k, v in feats.items()}
        del feats, out
        raws = [r.detach() for r in raws]
        scores = scores.detach()
        if isinstance(selected, Tensor):
            selected = selected.detach()
        xin = xin.detach()
        acts = [self._feature_map(r, name) for r, name in zip(raws, self.layers)]
        grads = [None if g is None else self._transformed(g) for g in grads]

        def derived(probability: bool) -> Callable[[Any, Tensor], Tensor]:
            def score(output: Any, who: Tensor) -> Tensor:
                picked = select_output(output, self.output)
                return spec.row_scores(picked, who, index, probability=probability)

            return score

        smooth = None
        if SMOOTHGRAD in methods:
            smooth = smoothgrad_weights(self._sampler(spec, index), xin, noise, acts)
        raw: dict[Key, Tensor] = {}
        with torch.no_grad():
            for i, (name, a, g) in enumerate(zip(self.layers, acts, grads)):
                for m in methods:
                    if m in GRADIENT_METHODS:
                        cam = GRADIENT_METHODS[m](a, g, eigen_smooth=self.eigen_smooth)
                    elif m in ACTIVATION_METHODS:
                        cam = ACTIVATION_METHODS[m](a)
                    elif m == "cam":
                        weight = gap_fc_weight(self.wrapper.model, a, selected, name)
                        cam = combine(weight[need_index(index, m)], a, self.eigen_smooth)
                    elif m == "scorecam":
                        w = scorecam_weights(
                            self.wrapper.model,
                            xin,
                            a,
                            derived(self.score_mode == "probability"),
                            batch_size=self.derived_chunk,
                            weights=self.score_mode,
                        )
                        cam = combine(w, a, self.eigen_smooth)
                    elif m == "ablationcam":
                        w = ablation_weights(
                            self.tails[name],
                            raws[i],
                            values,
                            xin,
                            derived(False),
                            scores,
                            batch_size=self.derived_chunk,
                        )
                        cam = combine(w, a, self.eigen_smooth)
                    else:  # smoothgradcam++
                        w, a_last = smooth[i]
                        cam = combine(w, a_last, self.eigen_smooth)
                    raw[m, name] = cam.clamp(min=0) if self.relu else cam
            classes = spec.classes(index)
            probs = None
            if classes is not None and isinstance(selected, Tensor) and selected.ndim == 2:
                cls = classes.to(selected.device)
                probs = torch.softmax(selected.float(), dim=1).gather(1, cls[:, None])[:, 0]
        return Chunk(raw, classes, scores, probs)

    def _sampler(self, spec: TargetSpec, index: Tensor | None):
        """SmoothGrad-CAM++'s ``sample(x) -> (activations, gradients)`` for a noisy copy."""

        def sample(x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
            with torch.enable_grad():
                xin = fresh_input(x, True)
                out, feats = self.wrapper(xin)
                picked = select_output(out, self.output)
                who = torch.arange(x.shape[0], device=x.device)
                scores = spec.row_scores(picked, who, index)
                raws = [feats[name] for name in self.layers]
                grads = gradients(scores, raws)
            acts = [self._feature_map(r.detach(), name) for r, name in zip(raws, self.layers)]
            return acts, [self._transformed(g) for g in grads]

        return sample

    def _transformed(self, value: Tensor) -> Tensor:
        return value if self.transform is None else self.transform(value)

    def _feature_map(self, value: Any, name: str) -> Tensor:
        if isinstance(value, Tensor) and self.transform is not None:
            value = self.transform(value)
        if not isinstance(value, Tensor) or value.ndim != 4:
            what = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
            hint = (
                "reshape_transform must return one"
                if self.transform is not None
                else "a token layer [B, N, C] must be reshaped into one: pass reshape_transform="
            )
            raise CamError(
                f"layer {name!r} gives {what}; CAMs need a feature map [batch, channels, "
                f"height, width] ({hint})"
            )
        return value


def fresh_input(x: Tensor, need_grad: bool) -> Tensor:
    xin = x.detach()
    if xin.is_inference():
        xin = xin.clone()
    if need_grad:
        xin.requires_grad_(True)
    return xin


def gradients(scores: Tensor, acts: list[Tensor]) -> list[Tensor]:
    """``∂(Σ_b score_b)/∂A`` for every activation, in one ``autograd.grad`` call.

    Zeros for an activation the scores do not depend on.
    """
    wanted = [i for i, a in enumerate(acts) if a.requires_grad]
    grads: list[Tensor | None] = [None] * len(acts)
    if wanted and scores.requires_grad:
        got = torch.autograd.grad(scores.sum(), [acts[i] for i in wanted], allow_unused=True)
        for i, g in zip(wanted, got):
            grads[i] = g
    return [torch.zeros_like(a) if g is None else g.detach() for a, g in zip(acts, grads)]


def need_index(index: Tensor | None, method: str) -> Tensor:
    if index is None:
        raise CamError(
            f"method {method!r} needs class-index targets (None, an int or one per image), "
            "not callables"
        )
    return index
