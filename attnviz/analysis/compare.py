"""compare(): what did attention change? Streams a dataset through several models once.

Per batch and per model there is one forward through a hook-free capturing
wrapper (every compared layer, every attention gate and the CAM layer at
once) and one ``torch.autograd.grad`` of the target scores down to the CAM
layer; every metric but faithfulness is fed from those. Faithfulness
(deletion / insertion, average drop) needs perturbed inputs by definition and
adds its own batched forwards. Metrics are streaming accumulators
(:mod:`attnviz.metrics`): memory does not grow with the number of images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._capture import build_capture
from .._maps import minmax
from ..cam.methods import ACTIVATION_METHODS, GRADIENT_METHODS
from ..errors import AttnvizError, DataError, InputContractError
from ..inputs import InputContract, common_contract
from ..inputs import input_contract as model_contract
from ..intermediates import IntermediateModel
from ..metrics import (
    CamAgreement,
    CamConcentration,
    CamLocalization,
    ClassificationStats,
    ConfidenceStats,
    FaithfulnessStats,
    FeatureStats,
    GateStats,
    LinearCKA,
    pearson_per_image,
)
from .comparison import Comparison
from .cost import model_cost
from .layers import resolve_layers
from .panels import TopDisagreement

__all__ = ["CAM_METHODS", "compare"]

CAM_METHODS = (*GRADIENT_METHODS, *ACTIVATION_METHODS)


# -- data ----------------------------------------------------------------------------------
def _loader(data: Any, batch_size: int) -> Iterable:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        if len(data) == 0:
            raise AttnvizError("data is empty: the dataset has no items")
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    if isinstance(data, Iterable):
        return data
    raise TypeError(
        f"data must be a DataLoader, a Dataset or an iterable of batches, got {type(data).__name__}"
    )


def _unpack(batch: Any, index: int) -> tuple[Tensor, Tensor, Tensor | None]:
    if not isinstance(batch, list | tuple) or len(batch) not in (2, 3):
        raise AttnvizError(
            f"each batch must be (images, labels) or (images, labels, masks); batch {index} is a {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, list | tuple) else "")
        )
    images, labels = batch[0], batch[1]
    masks = batch[2] if len(batch) == 3 else None
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = (
            f"{tuple(images.shape)} {images.dtype}"
            if isinstance(images, Tensor)
            else type(images).__name__
        )
        raise AttnvizError(f"images must be a float tensor [B, C, H, W]; batch {index} has {got}")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
        raise AttnvizError(
            f"labels must be integers [B={images.shape[0]}]; batch {index} has {tuple(labels.shape)} {labels.dtype}"
        )
    if masks is not None:
        masks = torch.as_tensor(masks)
        if masks.ndim == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.shape != (images.shape[0], *images.shape[2:]):
            raise AttnvizError(
                f"masks must be [B, H, W] matching the images; batch {index} has masks {tuple(masks.shape)} "
                f"for images {tuple(images.shape)}"
            )
        masks = masks > 0
    return images, labels, masks


def _batches(
    data: Any, batch_size: int, max_images: int | None, masks: Any
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    seen = 0
    for index, batch in enumerate(_loader(data, batch_size)):
        images, labels, batch_masks = _unpack(batch, index)
        if masks is False:
            batch_masks = None
        elif masks is not None:
            extra = [torch.as_tensor(masks[seen + i]) for i in range(images.shape[0])]
            batch_masks = _unpack((images, labels, torch.stack(extra)), index)[2]
        if max_images is not None and seen + images.shape[0] > max_images:
            keep = max_images - seen
            images, labels = images[:keep], labels[:keep]
            batch_masks = batch_masks[:keep] if batch_masks is not None else None
        if images.shape[0] == 0:
            return
        seen += images.shape[0]
        yield images, labels, batch_masks
        if max_images is not None and seen >= max_images:
            return


# -- helpers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _eval_on(models: Mapping[str, nn.Module], device: torch.device | None):
    """Eval mode (and ``device``) for the duration; every flag and device restored after."""
    saved = [{m: m.training for m in model.modules()} for model in models.values()]
    devices = [next((p.device for p in m.parameters()), None) for m in models.values()]
    try:
        for model in models.values():
            model.eval()
            if device is not None:
                model.to(device)
        yield
    finally:
        for model, flags, dev in zip(models.values(), saved, devices):
            if device is not None and dev is not None:
                model.to(dev)
            for m, flag in flags.items():
                m.training = flag


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _maps(method: str, act: Tensor, grad: Tensor | None, size: tuple[int, int]) -> Tensor:
    """ReLU'd map at input resolution (bilinear), not normalised."""
    fn = GRADIENT_METHODS.get(method)
    raw = fn(act, grad) if fn is not None else ACTIVATION_METHODS[method](act)
    raw = torch.relu(torch.nan_to_num(raw.float()))
    return F.interpolate(raw[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _progress(iterable: Iterable, enabled: bool, total: int | None) -> Iterable:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc="compare", unit="batch")


def _total_batches(data: Any, batch_size: int, max_images: int | None) -> int | None:
    try:
        n = len(data.dataset) if isinstance(data, DataLoader) else len(data)
        bs = data.batch_size if isinstance(data, DataLoader) and data.batch_size else batch_size
    except TypeError:
        return None
    if max_images is not None:
        n = min(n, max_images)
    return -(-n // bs)


def _capturing(model: nn.Module, r, gradient: bool) -> IntermediateModel:
    """The capturing wrapper from the already-traced plan; autograd recorded only after the CAM layer."""
    names = r.names()
    grad_from = r.cam_layer if gradient else None
    try:
        tree, forward = build_capture(r.plan, names, grad_from=grad_from)
    except ValueError:  # the CAM layer sits in an eager fallback part: record everything
        grad_from = None
        tree, forward = build_capture(r.plan, names)
    return IntermediateModel(model, tree, forward, names, grad_from)


# -- compare ------------------------------------------------------------------------------------
def compare(
    models: Mapping[str, nn.Module],
    data: Any,
    *,
    layers: str | Sequence[str] = "stages",
    cam_layer: str | None = None,
    cam_methods: Sequence[str] = ("gradcam",),
    masks: Any = None,
    max_images: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    faithfulness: bool = True,
    faithfulness_images: int | None = None,
    faithfulness_steps: int = 20,
    deletion_substrate: str = "zeros",
    insertion_substrate: str = "blur",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    panels: int = 8,
    denormalize: tuple[Sequence[float], Sequence[float]] | None = None,
    progress: bool = True,
    input_contract: InputContract | None = None,
    data_source: str | None = None,
) -> Comparison:
    """Compare a baseline (the first model) with its variants over the same images.

    Args:
        models: ``{name: model}``; the first is the baseline (e.g. the base model
            and its SE / ECA / CBAM variants made by :func:`attnviz.insert_attention`).
            Layers correspond by name (surgery keeps names).
        data: a ``DataLoader`` or a ``Dataset`` yielding ``(image, label)`` or
            ``(image, label, mask)``; images are the normalised model inputs.
        layers: ``"stages"`` (the baseline's stage outputs) or names / globs.
            A layer followed by an attention block in a variant is read after it.
        cam_layer: the layer CAMs are computed at (default: the last compared layer).
        cam_methods: CAM methods from one gradient (``gradcam``, ``gradcam++``,
            ``xgradcam``, ``layercam``, ``hirescam``) or none (``eigencam``); the
            first is the one agreement, localisation, faithfulness and panels use.
            CAMs target the true class.
        masks: None (use masks the data yields), False (ignore them), or a
            sequence of masks ``[H, W]`` in the data's order.
        max_images: stop after this many images.
        device: run there (models are moved back afterwards); default: the
            first model's device.
        faithfulness: add deletion / insertion AUCs (RISE) and average drop /
            increase in confidence (``2 * faithfulness_steps + 3`` extra forwards
            per image), on the first ``faithfulness_images`` images (default all).
        num_classes: for per-class gate profiles and pointing game (default:
            the baseline's output size).
        panels: how many most-disagreeing images to keep for CAM panels.
        denormalize: ``(mean, std)`` of the input normalisation, to show images
            (default: the dataset's ``mean`` / ``std`` attributes when it has them).
        input_contract: the input contract the data was built for (default: the one
            the models share; models whose contracts disagree are an
            :class:`~attnviz.errors.InputContractError`, as are models with different
            numbers of classes). Recorded in the report with ``data_source``.

    >>> import torch, torchvision
    >>> from torch.utils.data import TensorDataset
    >>> from attnviz import insert_attention
    >>> base = torchvision.models.resnet18(num_classes=4)
    >>> data = TensorDataset(torch.randn(8, 3, 64, 64), torch.randint(0, 4, (8,)))
    >>> result = compare({"base": base, "se": insert_attention(base, "se")}, data, progress=False, faithfulness=False)
    >>> [row["model"] for row in result.summary()]
    ['base', 'se']
    """
    if not isinstance(models, Mapping) or not models:
        raise AttnvizError(
            "models must be a non-empty dict {name: model}, the first being the baseline"
        )
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"models[{name!r}] is a {type(model).__name__}, not an nn.Module")
    methods = [cam_methods] if isinstance(cam_methods, str) else list(cam_methods)
    bad = [m for m in methods if m not in CAM_METHODS]
    if bad or not methods:
        from .._select import unknown_name_error

        raise unknown_name_error(
            "cam method for compare",
            bad[0] if bad else "",
            list(CAM_METHODS),
            hint="scorecam and cam need their own passes: use attnviz.compute_cam",
        )
    names = list(models)
    baseline = names[0]
    contracts = {n: model_contract(m) for n, m in models.items()}
    shared = input_contract or common_contract(contracts)
    dev = torch.device(device) if device is not None else _model_device(models[baseline])
    batches = _batches(data, batch_size, max_images, masks)
    try:
        first = next(batches)
    except StopIteration:
        raise AttnvizError("data is empty: it yielded no images") from None

    with _eval_on(models, dev):
        example = first[0][:1].to(dev)
        resolved = resolve_layers(dict(models), layers, cam_layer, example)
        gradient = any(m in GRADIENT_METHODS for m in methods)
        wrappers = {n: _capturing(models[n], resolved[n], gradient) for n in names}
        with torch.no_grad():
            outputs = {n: models[n](example) for n in names}
        _check_classes(outputs)
        out = outputs[baseline]
        del outputs
        if num_classes is None and isinstance(out, Tensor) and out.ndim == 2:
            num_classes = out.shape[1]
        common = list(resolved[baseline].layers)
        costs = {n: model_cost(models[n], first[0][: min(len(first[0]), 4)].to(dev)) for n in names}

        acc = {
            "classification": {
                n: ClassificationStats(top_k=min(5, num_classes or 5)) for n in names
            },
            "features": {n: {layer: FeatureStats() for layer in common} for n in names},
            "cka": {
                n: {layer: LinearCKA(skip_small_batches=True) for layer in common}
                for n in names[1:]
            },
            "gates": {
                n: {g: GateStats(num_classes=num_classes) for g in resolved[n].gates} for n in names
            },
            "concentration": {n: {m: CamConcentration() for m in methods} for n in names},
            "agreement": {n: {m: CamAgreement() for m in methods} for n in names[1:]},
            "localization": {
                n: {m: CamLocalization(num_classes=num_classes) for m in methods} for n in names
            },
            "faithfulness": {
                n: FaithfulnessStats(
                    steps=faithfulness_steps,
                    deletion_substrate=deletion_substrate,
                    insertion_substrate=insertion_substrate,
                    batch_size=max(batch_size, 32),
                )
                for n in names
            },
            "confidence": {n: ConfidenceStats(batch_size=max(batch_size, 32)) for n in names},
        }
        keeper = TopDisagreement(panels)
        feature_example: dict[str, Tensor] = {}
        grid_layer = common[len(common) // 2]

        pending = [first]
        del first

        def all_batches():
            yield pending.pop()  # not kept alive for the whole loop
            yield from batches

        total = _total_batches(data, batch_size, max_images)
        seen = 0
        for images, labels, batch_masks in _progress(all_batches(), progress, total):
            if num_classes is not None and labels.numel() and int(labels.max()) >= num_classes:
                raise DataError(
                    f"the data has labels up to {int(labels.max())} but the models have "
                    f"{num_classes} outputs: the data is not the one the models were trained on"
                )
            images, labels = images.to(dev), labels.to(dev)
            batch_masks = batch_masks.to(dev) if batch_masks is not None else None
            size = tuple(images.shape[-2:])
            base_feats: dict[str, Tensor] = {}
            base_cams: dict[str, Tensor] = {}
            panel_cams: dict[str, Tensor] = {}
            probs: dict[str, Tensor] = {}
            for n in names:
                r = resolved[n]
                x = images
                if wrappers[n].grad_from is None:  # a graph must exist even for frozen models
                    x = images.detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    logits, values = wrappers[n](x)
                    act = values[r.cam_layer]
                    grad = None
                    if gradient:
                        score = logits.gather(1, labels[:, None]).sum()
                        grad = torch.autograd.grad(score, act)[0]
                logits = logits.detach()
                probs[n] = logits.softmax(1).gather(1, labels[:, None])[:, 0]
                acc["classification"][n].update(logits, labels)
                for layer, vname in r.layers.items():
                    feat = values[vname].detach()
                    acc["features"][n][layer].update(feat)
                    if n == baseline:
                        base_feats[layer] = feat
                    else:
                        acc["cka"][n][layer].update(base_feats[layer], feat)
                    if seen == 0 and layer == grid_layer:
                        feature_example[n] = feat[0].to("cpu", copy=True)
                for g in r.gates:
                    acc["gates"][n][g].update(values[g].detach(), labels)
                act = act.detach()
                for i, m in enumerate(methods):
                    raw = _maps(m, act, grad, size)
                    cams = minmax(raw, flat="one", tol_ulps=0)
                    acc["concentration"][n][m].update(cams)
                    if batch_masks is not None:
                        acc["localization"][n][m].update(cams, batch_masks, labels)
                    if n == baseline:
                        base_cams[m] = cams
                    else:
                        acc["agreement"][n][m].update(cams, base_cams[m])
                    if i == 0:
                        panel_cams[n] = raw
                        k = (
                            images.shape[0]
                            if faithfulness_images is None
                            else max(0, min(images.shape[0], faithfulness_images - seen))
                        )
                        if faithfulness and k:
                            with torch.no_grad():
                                acc["faithfulness"][n].update(
                                    models[n], images[:k], cams[:k], labels[:k]
                                )
                                acc["confidence"][n].update(
                                    models[n], images[:k], cams[:k], labels[:k]
                                )
                del values, act, grad, x
            if len(names) > 1:
                first_method = methods[0]
                base_norm = minmax(panel_cams[baseline], flat="one", tol_ulps=0)
                corr = torch.stack(
                    [
                        pearson_per_image(
                            minmax(panel_cams[n], flat="one", tol_ulps=0).flatten(1),
                            base_norm.flatten(1),
                        )
                        for n in names[1:]
                    ]
                )
                disagreement = 1 - torch.nan_to_num(corr, nan=0.0).mean(0)
            else:
                first_method = methods[0]
                disagreement = 1 - probs[baseline]
            keeper.offer(disagreement, images, labels, batch_masks, panel_cams, probs)
            seen += images.shape[0]

    return Comparison.from_accumulators(
        names=names,
        layers=common,
        layer_names={n: resolved[n].layers for n in names},
        gate_stages={n: resolved[n].gates for n in names},
        cam_layer={n: resolved[n].cam_layer for n in names},
        methods=methods,
        accumulators=acc,
        costs=costs,
        panels=keeper.panels(),
        feature_example=feature_example,
        feature_layer=grid_layer,
        faithfulness=faithfulness and any(a.updated for a in acc["faithfulness"].values()),
        has_masks=any(a.updated for per in acc["localization"].values() for a in per.values()),
        n_images=seen,
        class_names=list(class_names) if class_names is not None else _attr(data, "class_names"),
        primary_method=first_method,
        denormalize=denormalize or _mean_std(data),
        inputs={
            "data": data_source,
            "image_size": list(size) if seen else None,
            "contract": shared.to_json(),
            "models": {
                n: {"weights": c.weights, "contract": c.source} for n, c in contracts.items()
            },
        },
    )


def _check_classes(outputs: dict[str, Any]) -> None:
    """Models compared on the same images must have the same number of classes."""
    sizes = {
        n: tuple(o.shape[1:]) if isinstance(o, Tensor) else type(o).__name__
        for n, o in outputs.items()
    }
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{n!r}: {s}" for n, s in sizes.items())
        raise InputContractError(
            f"the models give outputs of different shapes ({detail}): models with different "
            "classes cannot be compared image by image; compare models trained on the same classes"
        )


def _attr(data: Any, name: str) -> Any:
    """An attribute of the dataset behind ``data`` (a DataLoader's dataset, or a Subset's)."""
    obj = data.dataset if isinstance(data, DataLoader) else data
    for _ in range(3):
        if hasattr(obj, name):
            return getattr(obj, name)
        obj = getattr(obj, "dataset", None)
        if obj is None:
            return None
    return None


def _mean_std(data: Any) -> tuple[Sequence[float], Sequence[float]] | None:
    mean, std = _attr(data, "mean"), _attr(data, "std")
    return (tuple(mean), tuple(std)) if mean is not None and std is not None else None
