"""compute_cam: several CAM methods at several layers from one forward and one gradient.

The model is wrapped with :func:`attnviz.with_intermediates` (a rewritten
forward, no hooks), so each layer's activation is exact at the point it is
produced even when a later op works in place, and the gradient is taken with
``torch.autograd.grad`` of the summed target scores with respect to all
captured activations at once: parameters get no ``.grad``, and the backward
stops at the earliest requested layer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._select import is_glob, unknown_name_error
from ..intermediates import IntermediateModel
from . import scorecam as _scorecam
from ._cache import capturing
from .head import gap_fc_weight
from .methods import ACTIVATION_METHODS, GRADIENT_METHODS, METHODS, weighted_sum
from .normalize import NORMALIZE_CHOICES, apply_normalize, minmax_per_image, resize_maps
from .result import CamResult, Key
from .targets import Targets, TargetSpec, resolve_targets

__all__ = ["METHODS", "compute_cam"]

Size = str | tuple[int, int]

_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "gradcamplus": "gradcam++"}
_SCORECAM_CHUNK = 32


def compute_cam(
    model: nn.Module,
    images: Tensor,
    layer: str | Sequence[str],
    method: str | Sequence[str] = "gradcam",
    targets: Targets = None,
    *,
    relu: bool = True,
    normalize: str = "per_image",
    size: Size = "input",
    batch_size: int | None = None,
    scorecam_weights: str = "probability",
) -> CamResult:
    """Class activation maps of ``images`` at ``layer`` with ``method``, batched, without hooks.

    Args:
        model: any ``nn.Module``, traced with :func:`attnviz.with_intermediates`
            on the first call for a set of layers and reused while the model
            lives and its module tree is unchanged (see :mod:`attnviz.cam._cache`;
            :func:`clear_cache` forgets); or an
            :class:`~attnviz.intermediates.IntermediateModel` that captures the layers.
        images: ``[B, C, H, W]``, moved to the model's device.
        layer: a capturable name (module path ``"layer4"``, a value inside a
            module ``"layer4.1.attn.gate"``, or a glob), or a list of them: one map
            per layer, plus a fused map per method (mean of per-image min-max maps).
            :func:`attnviz.list_intermediates` lists the names.
        method: one of ``gradcam``, ``gradcam++``, ``xgradcam``, ``layercam``,
            ``hirescam`` (gradient methods), ``cam`` (GAP+FC classifier weights),
            ``scorecam`` (masked forwards), ``eigencam`` (first principal
            component; no target), or a list of them. All methods and layers of
            one call share one forward and one gradient computation; formulas
            and papers in :mod:`attnviz.cam.methods`.
        targets: ``None`` (predicted class), an ``int`` (that class for every
            image: the only broadcast), one class per image (sequence or tensor
            of length ``B``, else ``ValueError``), or a callable
            ``output -> Tensor[B]`` scoring each image (see :mod:`attnviz.cam.targets`).
        relu: apply the final ReLU (as the papers do); ``False`` keeps signed maps.
        normalize: ``"per_image"`` (min-max per map; flat maps become zeros),
            ``"none"`` (raw values, signed when ``relu=False``), or ``"shared"``
            (divided by the largest absolute value over the whole batch, per
            (method, layer)). To compare several models on one scale, compute with
            ``"none"`` and pass the maps to :func:`normalize_shared`.
        size: ``"input"`` (bilinear, ``align_corners=False``, to ``H, W``, like
            the references), ``"layer"`` (no resizing; fused maps at the largest
            layer's size), or ``(height, width)``.
        batch_size: the largest batch the model sees in one forward: images go
            through in chunks of this size (memory), and so do Score-CAM's ``B·C``
            masked images (default for those: 32).
        scorecam_weights: ``"probability"`` (softmax probability of the target on
            each masked image, the authors' code) or ``"softmax"`` (softmax over
            channels of the target logits, as pytorch-grad-cam and torchcam do).

    Returns:
        :class:`CamResult`: ``.maps`` ``[B, H, W]`` on the model's device for one
        (method, layer); ``result[method, layer]``, ``.by_method``, ``.by_layer``
        and ``.fused`` for several; ``.raw`` at the layer's resolution;
        ``.targets``, ``.scores`` (target logits) and ``.probs`` per image.

    What happens to the model: for the computation every module is put in eval
    mode (BatchNorm statistics and dropout do not mix the images of a batch), and
    each module's ``training`` flag is restored afterwards. No parameter's
    ``.grad`` or ``requires_grad`` is touched. Gradients are enabled inside (an
    outer ``torch.no_grad()`` or ``inference_mode()`` is fine), and the forward
    runs on a detached copy of ``images`` that requires grad, so a graph from the
    layer to the output exists even when every parameter is frozen. Only the
    returned (detached) tensors outlive the call, and the traced wrapper, kept
    for the next call as long as the model exists (no tensors in it).

    >>> import torch, torchvision
    >>> from attnviz.cam import compute_cam
    >>> net = torchvision.models.resnet18(num_classes=10).eval()
    >>> x = torch.randn(2, 3, 64, 64)
    >>> r = compute_cam(net, x, "layer4", targets=[3, 7])
    >>> tuple(r.maps.shape), tuple(r.raw.shape), r.targets.tolist()
    ((2, 64, 64), (2, 2, 2), [3, 7])
    >>> r = compute_cam(net, x, ["layer3", "layer4"], ["gradcam", "layercam"])
    >>> tuple(r["layercam", "layer3"].shape), tuple(r.fused_maps["gradcam"].shape)
    ((2, 64, 64), (2, 64, 64))
    """
    methods = _method_names(method)
    layers = _layer_names(layer)
    _check_options(normalize, size, batch_size, scorecam_weights, relu)
    _check_images(images)
    wrapper = _capturing(model, layers, images)
    if any(is_glob(name) for name in layers):
        layers = list(wrapper.names)
    device = _device(wrapper, images)
    n = images.shape[0]
    step = batch_size or n
    score_chunk = batch_size or _SCORECAM_CHUNK

    parts: list[_Chunk] = []
    with _eval_mode(wrapper), torch.inference_mode(False):
        x = images.to(device)
        spec = resolve_targets(targets, n)
        if "cam" in methods and spec.kind == "callable":
            _need_index(None, "cam")
        for start in range(0, n, step):
            stop = min(start + step, n)
            parts.append(
                _run_chunk(
                    wrapper,
                    x[start:stop],
                    layers,
                    methods,
                    spec.chunk(start, stop),
                    relu=relu,
                    score_chunk=score_chunk,
                    score_mode=scorecam_weights,
                )
            )
    return _assemble(parts, methods, layers, x.shape[-2:], size, normalize)


# -- one chunk of images ---------------------------------------------------------
class _Chunk(NamedTuple):
    raw: dict[Key, Tensor]
    targets: Tensor | None
    scores: Tensor
    probs: Tensor | None


def _run_chunk(
    wrapper: IntermediateModel,
    x: Tensor,
    layers: list[str],
    methods: list[str],
    spec: TargetSpec,
    *,
    relu: bool,
    score_chunk: int,
    score_mode: str,
) -> _Chunk:
    need_grad = any(m in GRADIENT_METHODS for m in methods)
    with torch.enable_grad() if need_grad else torch.no_grad():
        xin = x.detach()
        if xin.is_inference():
            xin = xin.clone()
        if need_grad:
            xin.requires_grad_(True)
        output, feats = wrapper(xin)
        acts = [_activation(feats, name) for name in layers]
        index, scores = spec.scores(output)
        grads = _gradients(scores, acts) if need_grad else [None] * len(acts)
    del feats
    acts = [a.detach() for a in acts]
    scores = scores.detach()
    if isinstance(output, Tensor):
        output = output.detach()

    raw: dict[Key, Tensor] = {}
    with torch.no_grad():
        for name, a, g in zip(layers, acts, grads):
            for m in methods:
                if m in GRADIENT_METHODS:
                    cam = GRADIENT_METHODS[m](a, g)
                elif m in ACTIVATION_METHODS:
                    cam = ACTIVATION_METHODS[m](a)
                elif m == "cam":
                    weight = gap_fc_weight(wrapper.model, a, output, name)
                    cam = weighted_sum(weight[_need_index(index, m)], a)
                else:  # scorecam
                    w = _scorecam.scorecam_weights(
                        wrapper.model,
                        xin.detach(),
                        a,
                        index,
                        spec.fn,
                        batch_size=score_chunk,
                        weights=score_mode,
                    )
                    cam = weighted_sum(w, a)
                raw[m, name] = cam.clamp(min=0) if relu else cam
        probs = None
        if index is not None and isinstance(output, Tensor) and output.ndim == 2:
            probs = torch.softmax(output.float(), dim=1).gather(1, index[:, None])[:, 0]
    return _Chunk(raw, index, scores, probs)


def _activation(feats: dict[str, Any], name: str) -> Tensor:
    value = feats.get(name)
    if not isinstance(value, Tensor) or value.ndim != 4:
        what = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"layer {name!r} gives {what}; CAMs need a feature map [batch, channels, height, "
            "width] (a token layer [B, N, C] must be reshaped into one first)"
        )
    return value


def _gradients(scores: Tensor, acts: list[Tensor]) -> list[Tensor]:
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


def _need_index(index: Tensor | None, method: str) -> Tensor:
    if index is None:
        raise ValueError(
            f"method {method!r} needs class-index targets (None, an int or one per image), "
            "not a callable"
        )
    return index


# -- assembling the result -------------------------------------------------------
def _assemble(
    parts: list[_Chunk],
    methods: list[str],
    layers: list[str],
    input_size: Sequence[int],
    size: Size,
    normalize: str,
) -> CamResult:
    raw = {k: torch.cat([p.raw[k] for p in parts]) for k in parts[0].raw}
    targets = None if parts[0].targets is None else torch.cat([p.targets for p in parts])
    scores = torch.cat([p.scores for p in parts])
    probs = None if parts[0].probs is None else torch.cat([p.probs for p in parts])

    def out_size(shapes: list[tuple[int, int]]) -> tuple[int, int]:
        if size == "input":
            return (int(input_size[0]), int(input_size[1]))
        if size == "layer":
            return max(shapes, key=lambda s: s[0] * s[1])
        return (int(size[0]), int(size[1]))

    maps: dict[Key, Tensor] = {}
    fused: dict[str, Tensor] = {}
    for m in methods:
        per_layer = {name: raw[m, name] for name in layers}
        for name, r in per_layer.items():
            maps[m, name] = apply_normalize(resize_maps(r, out_size([r.shape[-2:]])), normalize)
        if len(layers) == 1 and normalize == "per_image":
            fused[m] = maps[m, layers[0]]  # the mean of one per-image scaled map is that map
            continue
        target = out_size([tuple(r.shape[-2:]) for r in per_layer.values()])
        mean = torch.stack(
            [minmax_per_image(resize_maps(r, target)) for r in per_layer.values()]
        ).mean(dim=0)
        fused[m] = apply_normalize(mean, normalize)
    return CamResult(
        methods=tuple(methods),
        layers=tuple(layers),
        all_maps=maps,
        all_raw=raw,
        fused_maps=fused,
        targets=targets,
        scores=scores,
        probs=probs,
        normalize=normalize,
    )


# -- arguments -------------------------------------------------------------------
def _canonical(name: str) -> str:
    key = "".join(ch for ch in name.lower() if ch not in "-_ ")
    return _ALIASES.get(key, key)


def _method_names(method: str | Sequence[str]) -> list[str]:
    names = [method] if isinstance(method, str) else list(method)
    if not names:
        raise ValueError(f"method is empty; choose from {list(METHODS)}")
    out = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"method must be a name or a list of names, got {name!r}")
        canon = _canonical(name)
        if canon not in METHODS:
            raise unknown_name_error("CAM method", name, METHODS)
        out.append(canon)
    return list(dict.fromkeys(out))


def _layer_names(layer: str | Sequence[str]) -> list[str]:
    names = [layer] if isinstance(layer, str) else list(layer)
    if not names:
        raise ValueError("layer is empty: give a layer name (list_intermediates(model) lists them)")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"layer must be a name or a list of names (e.g. 'layer4'), got {name!r}; "
                "pass the module's path, not the module"
            )
    return list(dict.fromkeys(names))


def _check_options(
    normalize: str, size: Size, batch_size: int | None, score_mode: str, relu: bool
) -> None:
    if normalize not in NORMALIZE_CHOICES:
        raise ValueError(f"normalize must be one of {list(NORMALIZE_CHOICES)}, got {normalize!r}")
    if isinstance(size, str):
        if size not in ("input", "layer"):
            raise ValueError(f"size must be 'input', 'layer' or (height, width), got {size!r}")
    elif not (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be 'input', 'layer' or (height, width), got {size!r}")
    if batch_size is not None and (
        not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if score_mode not in _scorecam.SCORECAM_WEIGHTS:
        raise ValueError(
            f"scorecam_weights must be one of {list(_scorecam.SCORECAM_WEIGHTS)}, got {score_mode!r}"
        )
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be True or False, got {relu!r}")


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a tensor [B, C, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"images must be a non-empty batch [B, C, H, W], got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point, got {images.dtype}")


def _capturing(model: nn.Module, layers: list[str], images: Tensor) -> IntermediateModel:
    if isinstance(model, IntermediateModel):
        missing = [name for name in layers if name not in model.names]
        if missing:
            raise ValueError(
                f"the IntermediateModel captures {model.names}, not {missing}; wrap the model "
                "with with_intermediates(model, [...]) including these layers, or pass the "
                "model itself"
            )
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    example = None
    if any(is_glob(name) for name in layers):
        example = images[:1].to(_device(model, images))
    return capturing(model, layers, example)


def _device(module: nn.Module, images: Tensor) -> torch.device:
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return first.device if first is not None else images.device


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the block; every module's ``training`` flag restored after."""
    saved = [(m, m.training) for m in module.modules()]
    if any(flag for _, flag in saved):
        module.train(False)
    try:
        yield
    finally:
        for m, flag in saved:
            if m.training != flag:
                m.training = flag
