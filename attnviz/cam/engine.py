"""compute_cam: several CAM methods at several layers from one forward and one gradient.

The model is wrapped with :func:`attnviz.with_intermediates` (a rewritten
forward, no hooks), so each layer's activation is exact at the point it is
produced even when a later op works in place, and the gradient is taken with
``torch.autograd.grad`` of the summed target scores with respect to all
captured activations at once: parameters get no ``.grad``, and the backward
stops at the earliest requested layer.

Methods that need more than that forward run their own passes, chunk by chunk:
Score-CAM (the masked images), Ablation-CAM (the ablated channels, through the
layers after the target layer only), SmoothGrad-CAM++ (one forward and gradient
per noisy copy, shared by all layers). ``aug_smooth`` multiplies every pass by six.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._maps import minmax, resize_maps
from .._select import is_glob
from .._tail import LayerTail
from .._utils import eval_mode, model_device
from ..errors import CamError
from ..intermediates import IntermediateModel
from ._cache import capturing, tail_of
from .augment import AUGMENTATIONS, augment, deaugment
from .methods import METHODS
from .normalize import apply_normalize
from .options import Size, check_images, check_options, layer_names, method_names
from .outputs import OutputChoice, select_output
from .passes import SMOOTHGRAD, Chunk, ChunkRun, Transform, need_index
from .result import CamResult, Key
from .smoothgrad import draw_noise
from .targets import Targets, TargetSpec, classifier_output, resolve_targets

__all__ = ["METHODS", "compute_cam"]

_DERIVED_CHUNK = 32  # default rows per forward of Score-CAM's and Ablation-CAM's copies


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
    output: OutputChoice = None,
    reshape_transform: Transform | None = None,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
    noise_samples: int = 4,
    noise_std: float = 0.3,
    noise_seed: int = 0,
    keep_images: bool = True,
    class_names: Sequence[str] | None = None,
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
            component; no target), ``ablationcam`` (channels zeroed one by one,
            :mod:`attnviz.cam.ablation`), ``smoothgradcam++`` (torchcam's
            SmoothGradCAMpp, :mod:`attnviz.cam.smoothgrad`), or a list of them.
            All methods and layers of one call share one forward and one gradient;
            Score-CAM, Ablation-CAM and SmoothGrad-CAM++ add their own passes.
            Formulas and papers in :mod:`attnviz.cam.methods`.
        targets: ``None`` (predicted class), an ``int`` (that class for every
            image: the only broadcast), one class per image (sequence or tensor
            of length ``B``, else an error), a list of one target per image whose
            entries may be callables scoring *that image's* output
            (pytorch-grad-cam's ``ClassifierOutputTarget``,
            ``SemanticSegmentationTarget``... as they are, or
            :class:`~attnviz.cam.SoftmaxTarget`, :class:`~attnviz.cam.SegmentationTarget`),
            or a callable ``output -> Tensor[B]`` scoring each image (see
            :mod:`attnviz.cam.targets`).
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
            through in chunks of this size (memory), and so do the ``B·C`` masked
            or ablated copies of Score-CAM and Ablation-CAM (default for those: 32).
        scorecam_weights: ``"probability"`` (softmax probability of the target on
            each masked image, the authors' code) or ``"softmax"`` (softmax over
            channels of the target logits, as pytorch-grad-cam and torchcam do).
        output: what the targets score when the model returns more than a
            tensor: a key (``"out"``), an index, or a callable; torchvision's
            segmentation models (``{"out": ..., "aux": ...}``) need none (see
            :mod:`attnviz.cam.outputs`).
        reshape_transform: applied to each captured activation and to its
            gradient, as pytorch-grad-cam applies it, to turn a layer's value into
            a feature map ``[B, C, h, w]`` (ViT tokens ``[B, 1 + h·w, C]`` without the
            class token, Swin's ``[B, h, w, C]``).
        aug_smooth: pytorch-grad-cam's test-time augmentation: the mean of the maps
            of six flipped and rescaled versions of each image, flipped back
            (:mod:`attnviz.cam.augment`); six times the passes.
        eigen_smooth: the first principal component of the weighted activations
            instead of their channel sum (pytorch-grad-cam's option; every method).
        noise_samples, noise_std, noise_seed: SmoothGrad-CAM++'s noisy copies:
            how many, the Gaussian noise's standard deviation (in the units of
            ``images``), and the seed of the CPU generator they are drawn from.
        keep_images: keep a reference to ``images`` in the result (no copy) for
            :meth:`CamResult.show` and the notebook display; ``False`` drops it.
        class_names: names of the class indices, for the result's display.

    Returns:
        :class:`CamResult`: ``.maps`` ``[B, H, W]`` on the model's device for one
        (method, layer); ``result[method, layer]``, ``.by_method``, ``.by_layer``
        and ``.fused`` for several; ``.raw`` at the layer's resolution;
        ``.targets``, ``.scores`` (target logits) and ``.probs`` per image;
        ``.show()`` draws the overlays.

    What happens to the model: for the computation every module is put in eval
    mode (BatchNorm statistics and dropout do not mix the images of a batch), and
    each module's ``training`` flag is restored afterwards. No parameter's
    ``.grad`` or ``requires_grad`` is touched. Gradients are enabled inside (an
    outer ``torch.no_grad()`` or ``inference_mode()`` is fine), and the forward
    runs on a detached copy of ``images`` that requires grad, so a graph from the
    layer to the output exists even when every parameter is frozen. Only the
    returned (detached) tensors outlive the call (and ``images``, by reference),
    and the traced wrapper, kept for the next call as long as the model exists.

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

    A torchvision segmentation model, with pytorch-grad-cam's segmentation target
    (or :class:`~attnviz.cam.SegmentationTarget`) for each image:

    >>> from attnviz.cam import SegmentationTarget
    >>> fcn = torchvision.models.segmentation.fcn_resnet50(
    ...     weights=None, weights_backbone=None, num_classes=3).eval()
    >>> mask = torch.zeros(64, 64); mask[16:48, 16:48] = 1
    >>> r = compute_cam(fcn, x, "backbone.layer4", targets=[SegmentationTarget(1, mask)] * 2)
    >>> tuple(r.maps.shape)
    (2, 64, 64)
    """
    methods = method_names(method)
    layers = layer_names(layer)
    check_options(
        normalize=normalize,
        size=size,
        batch_size=batch_size,
        score_mode=scorecam_weights,
        relu=relu,
        output=output,
        reshape_transform=reshape_transform,
        flags={"aug_smooth": aug_smooth, "eigen_smooth": eigen_smooth, "keep_images": keep_images},
        noise_samples=noise_samples,
        noise_std=noise_std,
        noise_seed=noise_seed,
        class_names=class_names,
    )
    check_images(images)
    wrapper = _capturing(model, layers, images)
    if any(is_glob(name) for name in layers):
        layers = list(wrapper.names)
    tails: dict[str, LayerTail] = {}
    if "ablationcam" in methods:
        tails, wrapper = _ablation_setup(model, wrapper, layers, images, reshape_transform)
    device = _device(wrapper, images)
    n = images.shape[0]
    run = ChunkRun(
        wrapper=wrapper,
        layers=layers,
        methods=methods,
        relu=relu,
        output=output,
        transform=reshape_transform,
        eigen_smooth=eigen_smooth,
        tails=tails,
        derived_chunk=batch_size or _DERIVED_CHUNK,
        score_mode=scorecam_weights,
    )
    with eval_mode(wrapper), torch.inference_mode(False):
        x = images.to(device)
        spec = resolve_targets(targets, n)
        if "cam" in methods and spec.kind not in ("argmax", "index"):
            need_index(None, "cam")
        versions = len(AUGMENTATIONS) if aug_smooth else 1
        if aug_smooth:
            if spec.kind == "argmax":
                spec = TargetSpec("index", _predicted(run, x, batch_size or n).cpu(), batch=n)
            x_all, spec_all = augment(x), spec.repeat(versions)
        else:
            x_all, spec_all = x, spec
        noise = None
        if SMOOTHGRAD in methods:
            noise = draw_noise(x_all.shape, noise_samples, noise_std, noise_seed)
        step = batch_size or n
        parts = []
        for start in range(0, x_all.shape[0], step):
            stop = min(start + step, x_all.shape[0])
            eps = None if noise is None else noise[:, start:stop]
            parts.append(run.chunk(x_all[start:stop], spec_all.chunk(start, stop), eps))
    result = _assemble(parts, methods, layers, x.shape[-2:], size, normalize, versions, n)
    return result.replace(
        images=images if keep_images else None,
        class_names=None if class_names is None else tuple(class_names),
        target_labels=spec.labels(),
    )


def _predicted(run: ChunkRun, x: Tensor, step: int) -> Tensor:
    """The predicted class of each image (``aug_smooth`` explains it in every version)."""
    found = []
    with torch.no_grad():
        for start in range(0, x.shape[0], step):
            out = run.wrapper.model(x[start : start + step])
            found.append(classifier_output(select_output(out, run.output), "argmax").argmax(1))
    return torch.cat(found)


# -- assembling the result -------------------------------------------------------
def _assemble(
    parts: list[Chunk],
    methods: list[str],
    layers: list[str],
    input_size: Sequence[int],
    size: Size,
    normalize: str,
    versions: int,
    batch: int,
) -> CamResult:
    """Resize, normalise and fuse the raw maps; average the ``versions`` of ``aug_smooth``."""
    raw = {k: torch.cat([p.raw[k] for p in parts]) for k in parts[0].raw}
    targets = None if parts[0].targets is None else torch.cat([p.targets for p in parts])[:batch]
    scores = torch.cat([p.scores for p in parts])[:batch]
    probs = None if parts[0].probs is None else torch.cat([p.probs for p in parts])[:batch]

    def out_size(shapes: list[tuple[int, int]]) -> tuple[int, int]:
        if size == "input":
            return (int(input_size[0]), int(input_size[1]))
        if size == "layer":
            return max(shapes, key=lambda s: s[0] * s[1])
        return (int(size[0]), int(size[1]))

    def normalized(maps: Tensor) -> Tensor:  # each version on its own, as without augmentation
        blocks = maps.view(versions, batch, *maps.shape[1:])
        return torch.cat([apply_normalize(b, normalize) for b in blocks])

    maps: dict[Key, Tensor] = {}
    fused: dict[str, Tensor] = {}
    for m in methods:
        per_layer = {name: raw[m, name] for name in layers}
        for name, r in per_layer.items():
            maps[m, name] = normalized(resize_maps(r, out_size([r.shape[-2:]])))
        if len(layers) == 1 and normalize == "per_image":
            fused[m] = maps[m, layers[0]]  # the mean of one per-image scaled map is that map
            continue
        target = out_size([tuple(r.shape[-2:]) for r in per_layer.values()])
        mean = torch.stack(
            [minmax(resize_maps(r, target), flat="zero") for r in per_layer.values()]
        ).mean(dim=0)
        fused[m] = normalized(mean)
    if versions > 1:
        raw = {k: deaugment(v, batch) for k, v in raw.items()}
        maps = {k: deaugment(v, batch) for k, v in maps.items()}
        fused = {k: deaugment(v, batch) for k, v in fused.items()}
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


# -- model -----------------------------------------------------------------------
def _capturing(model: nn.Module, layers: list[str], images: Tensor) -> IntermediateModel:
    if isinstance(model, IntermediateModel):
        missing = [name for name in layers if name not in model.names]
        if missing:
            raise CamError(
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


def _ablation_setup(
    model: nn.Module,
    wrapper: IntermediateModel,
    layers: list[str],
    images: Tensor,
    reshape_transform: Transform | None,
) -> tuple[dict[str, LayerTail], IntermediateModel]:
    """Each layer's tail, and a wrapper that also captures the values the tails read."""
    if reshape_transform is not None:
        raise CamError(
            "ablationcam zeroes channels of the layer's own value, which reshape_transform "
            "does not describe; use it without reshape_transform (on a [B, C, h, w] layer)"
        )
    if isinstance(model, IntermediateModel):
        raise CamError(
            "ablationcam re-runs the model from each layer and captures what it needs on the "
            "way: pass the model itself, not an IntermediateModel"
        )
    tails = {name: tail_of(model, name) for name in layers}
    extra = [v for t in tails.values() for v in t.frontier if v not in layers]
    if extra:
        wrapper = capturing(model, [*layers, *dict.fromkeys(extra)])
    return tails, wrapper


def _device(module: nn.Module, images: Tensor) -> torch.device:
    """The model's device; the images' for a model without parameters or buffers."""
    if next(itertools.chain(module.parameters(), module.buffers()), None) is None:
        return images.device
    return model_device(module)[0]
