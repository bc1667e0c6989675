"""compare(): what did attention change? Streams a dataset through several models once.

Per batch and per model there is one forward through a hook-free capturing
wrapper (every compared layer, every attention gate and the CAM layer at
once) and one ``torch.autograd.grad`` of the target scores down to the CAM
layer; every metric but faithfulness is fed from those. Faithfulness
(deletion / insertion, average drop) needs perturbed inputs by definition and
adds its own batched forwards, on a bounded subset of the images by default.
Metrics are streaming accumulators (:mod:`attnviz.analysis.accumulators`): memory
does not grow with the number of images. Each variant is also compared image by
image with the baseline (paired bootstrap intervals, McNemar for accuracy,
Holm-adjusted), and under ``torchrun`` every process takes its share of whole
batches and the accumulators are summed once at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from .._capture import build_capture
from .._maps import minmax
from .._select import unknown_name_error
from .._utils import eval_mode, model_device
from ..cam.methods import ACTIVATION_METHODS, GRADIENT_METHODS
from ..errors import AttnvizError, DataError, InputContractError
from ..inputs import InputContract, common_contract
from ..inputs import input_contract as model_contract
from ..intermediates import IntermediateModel
from ..metrics import pearson_per_image
from .accumulators import AGREEMENT, Bootstrap, ModelStats, per_image_values, state_elements
from .attention_maps import attention_pictures
from .columns import TESTED
from .comparison import Comparison
from .cost import model_cost
from .layers import ModelLayers, resolve_layers
from .panels import TopDisagreement

__all__ = ["CAM_METHODS", "DEFAULT_FAITHFULNESS_IMAGES", "compare"]

CAM_METHODS = (*GRADIENT_METHODS, *ACTIVATION_METHODS)
#: Faithfulness costs ``2 * steps + 3`` forwards per image: by default it is measured on the
#: first 64 images only (printed and recorded in the report).
DEFAULT_FAITHFULNESS_IMAGES = 64


# -- data ----------------------------------------------------------------------------------
@dataclass
class _Batch:
    images: Tensor
    labels: Tensor
    masks: Tensor | None
    index: Tensor  # each image's position in the data (keys its bootstrap weights)
    number: int  # the batch's position in the data (keys minibatch CKA's weights)


def _unpack(batch: Any, number: int) -> tuple[Tensor, Tensor, Tensor | None]:
    if not isinstance(batch, list | tuple) or len(batch) not in (2, 3):
        raise DataError(
            "each batch must be (images, labels) or (images, labels, masks); batch "
            f"{number} is a {type(batch).__name__}"
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
        raise DataError(f"images must be a float tensor [B, C, H, W]; batch {number} has {got}")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
        raise DataError(
            f"labels must be integers [B={images.shape[0]}]; batch {number} has "
            f"{tuple(labels.shape)} {labels.dtype}"
        )
    if masks is not None:
        masks = torch.as_tensor(masks)
        if masks.ndim == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.shape != (images.shape[0], *images.shape[2:]):
            raise DataError(
                f"masks must be [B, H, W] matching the images; batch {number} has masks "
                f"{tuple(masks.shape)} for images {tuple(images.shape)}"
            )
        masks = masks > 0
    return images, labels, masks


def _is_dataset(data: Any) -> bool:
    return isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__"))


def _raw_batches(
    data: Any, batch_size: int, rank: int, world: int
) -> Iterator[tuple[int, int, Any]]:
    """``(batch number, first image position, batch)`` of this process's share of whole batches."""
    if isinstance(data, DataLoader) or not _is_dataset(data):
        if not isinstance(data, Iterable):
            raise AttnvizError(
                "data must be a DataLoader, a Dataset or an iterable of batches, got "
                f"{type(data).__name__}"
            )
        start = 0
        for number, batch in enumerate(data):
            size = len(batch[0]) if isinstance(batch, list | tuple) and batch else 0
            if number % world == rank:
                yield number, start, batch
            start += size
        return
    if len(data) == 0:
        raise DataError("data is empty: the dataset has no items")
    batches = list(BatchSampler(SequentialSampler(range(len(data))), batch_size, drop_last=False))
    mine = list(range(rank, len(batches), world))
    loader = DataLoader(data, batch_sampler=[batches[i] for i in mine], num_workers=0)
    for number, batch in zip(mine, loader):
        yield number, batches[number][0], batch


def _batches(
    data: Any, batch_size: int, max_images: int | None, masks: Any, rank: int = 0, world: int = 1
) -> Iterator[_Batch]:
    for number, start, batch in _raw_batches(data, batch_size, rank, world):
        if max_images is not None and start >= max_images:
            return
        images, labels, batch_masks = _unpack(batch, number)
        if masks is False:
            batch_masks = None
        elif masks is not None:
            extra = [torch.as_tensor(masks[start + i]) for i in range(images.shape[0])]
            batch_masks = _unpack((images, labels, torch.stack(extra)), number)[2]
        if max_images is not None and start + images.shape[0] > max_images:
            keep = max_images - start
            images, labels = images[:keep], labels[:keep]
            batch_masks = batch_masks[:keep] if batch_masks is not None else None
        if images.shape[0] == 0:
            return
        index = torch.arange(start, start + images.shape[0])
        yield _Batch(images, labels, batch_masks, index, number)


def _count_images(data: Any, max_images: int | None) -> int | None:
    try:
        n = len(data.dataset) if isinstance(data, DataLoader) else len(data)
    except TypeError:
        return None
    return n if max_images is None else min(n, max_images)


# -- helpers ---------------------------------------------------------------------------------
def _maps(method: str, act: Tensor, grad: Tensor | None, size: tuple[int, int]) -> Tensor:
    """ReLU'd map at input resolution (bilinear), not normalised."""
    fn = GRADIENT_METHODS.get(method)
    raw = fn(act, grad) if fn is not None else ACTIVATION_METHODS[method](act)
    raw = torch.relu(torch.nan_to_num(raw.float()))
    return F.interpolate(raw[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _progress(enabled: bool, total: int | None):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="compare", unit="img", disable=not enabled, smoothing=0.1)


def _capturing(model: nn.Module, r: ModelLayers, gradient: bool) -> IntermediateModel:
    """The capturing wrapper from the already-traced plan; autograd recorded only after the CAM layer."""
    names = r.names()
    grad_from = r.cam_layer if gradient else None
    try:
        tree, forward = build_capture(r.plan, names, grad_from=grad_from)
    except ValueError:  # the CAM layer sits in an eager fallback part: record everything
        grad_from = None
        tree, forward = build_capture(r.plan, names)
    return IntermediateModel(model, tree, forward, names, grad_from)


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


def _distributed(distributed: bool | None) -> tuple[int, int]:
    """``(rank, world size)``: the process group's when ``distributed`` (default: if one is up)."""
    import torch.distributed as dist

    up = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = up
    if distributed and not up:
        raise AttnvizError(
            "compare(distributed=True) needs an initialised process group (torchrun)"
        )
    return (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)


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
    faithfulness_images: int | None = DEFAULT_FAITHFULNESS_IMAGES,
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
    replicates: int = 1000,
    bootstrap_seed: int = 0,
    level: float = 0.95,
    distributed: bool | None = None,
) -> Comparison:
    """Compare a baseline (the first model) with its variants over the same images.

    Args:
        models: ``{name: model}``; the first is the baseline (e.g. the base model
            and its SE / ECA / CBAM variants made by :func:`attnviz.insert_attention`).
            Layers correspond by name (surgery keeps names).
        data: a ``Dataset`` (or ``DataLoader``) yielding ``(image, label)`` or
            ``(image, label, mask)``; images are the normalised model inputs.
        layers: ``"stages"`` (the baseline's stage outputs) or names / globs.
            A layer followed by an attention block in a variant is read after it.
        cam_layer: the layer CAMs are computed at (default: the last compared layer).
        cam_methods: CAM methods from one gradient (``gradcam``, ``gradcam++``,
            ``xgradcam``, ``layercam``, ``hirescam``) or none (``eigencam``); the
            first is the one agreement, localization, faithfulness and panels use.
            CAMs target the true class.
        masks: None (use masks the data yields), False (ignore them), or a
            sequence of masks ``[H, W]`` in the data's order.
        max_images: stop after this many images.
        device: run there (models are moved back afterwards); default: the
            first model's device.
        faithfulness: add deletion / insertion AUCs (RISE) and average drop /
            increase in confidence (``2 * faithfulness_steps + 3`` extra forwards
            per image), on the first ``faithfulness_images`` images (default 64;
            ``None``: all).
        num_classes: for per-class gate profiles and pointing game (default:
            the baseline's output size).
        panels: how many most-disagreeing images to keep for CAM panels.
        denormalize: ``(mean, std)`` of the input normalisation, to show images
            (default: the dataset's ``mean`` / ``std`` attributes when it has them).
        input_contract: the input contract the data was built for (default: the one
            the models share; models whose contracts disagree are an
            :class:`~attnviz.errors.InputContractError`, as are models with different
            numbers of classes). Recorded in the report with ``data_source``.
        replicates, bootstrap_seed, level: the streaming Poisson bootstrap behind every
            interval (B weights per image keyed by ``(seed, image position)``); each
            variant's per-image metrics are compared with the baseline's on the same
            images (paired), accuracy by McNemar's exact test, and the tests of one
            comparison are Holm-adjusted (:meth:`Comparison.tests`).
        distributed: shard whole batches over the ``torchrun`` processes and sum every
            accumulator once at the end (default: when a process group is up); the
            numbers equal a single process's. Every rank returns the same comparison;
            write it from rank 0.

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
        raise unknown_name_error(
            "cam method for compare",
            bad[0] if bad else "",
            list(CAM_METHODS),
            hint="scorecam, ablationcam and cam need their own passes: use attnviz.compute_cam",
        )
    if faithfulness_images is not None and faithfulness_images < 0:
        raise AttnvizError(f"faithfulness_images must be >= 0 or None, got {faithfulness_images}")
    names = list(models)
    baseline = names[0]
    contracts = {n: model_contract(m) for n, m in models.items()}
    shared = input_contract or common_contract(contracts)
    boot = Bootstrap(replicates, bootstrap_seed, level)
    rank, world = _distributed(distributed)
    dev = torch.device(device) if device is not None else model_device(models[baseline])[0]
    try:
        setup = next(_batches(data, batch_size, max_images, masks))
    except StopIteration:
        raise DataError("data is empty: it yielded no images") from None

    with eval_mode(list(models.values()), dev):
        example = setup.images[:1].to(dev)
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
        costs = {
            n: model_cost(models[n], setup.images[: min(len(setup.images), 4)].to(dev))
            for n in names
        }
        stats = {
            n: ModelStats.create(
                n,
                baseline=n == baseline,
                layers=common,
                gates=list(resolved[n].gates),
                methods=methods,
                num_classes=num_classes,
                boot=boot,
                faithfulness_steps=faithfulness_steps,
                deletion_substrate=deletion_substrate,
                insertion_substrate=insertion_substrate,
                batch_size=batch_size,
            )
            for n in names
        }
        run = _Run(
            models,
            wrappers,
            resolved,
            stats,
            methods,
            baseline,
            num_classes,
            dev,
            faithfulness,
            faithfulness_images,
            TopDisagreement(panels),
            common[len(common) // 2],
        )
        del setup
        total = _count_images(data, max_images)
        bar = _progress(progress and rank == 0, None if total is None else total * len(names))
        try:
            for batch in _batches(data, batch_size, max_images, masks, rank, world):
                run.step(batch, bar)
        finally:
            bar.close()
        seen, faithful_images = run.seen, run.faithful_images
        panel_list = run.keeper.panels()
        if world > 1:
            seen, faithful_images, panel_list = _reduce(stats, seen, faithful_images, run.keeper)
        pictures: dict[str, Any] = {"spatial": {}, "queries": {}}
        if panel_list and rank == 0:  # the panels' images once more: spatial gates, query maps
            pictures = attention_pictures(
                models,
                torch.stack([p.image for p in panel_list]),
                torch.stack([p.cams[baseline] for p in panel_list]),
                dev,
            )

    faithful = faithfulness and any(s.faithfulness.updated for s in stats.values())
    return Comparison.from_stats(
        stats,
        layers=common,
        layer_names={n: resolved[n].layers for n in names},
        gate_stages={n: resolved[n].gates for n in names},
        cam_layer={n: resolved[n].cam_layer for n in names},
        methods=methods,
        costs=costs,
        panels=panel_list,
        feature_example=run.feature_example,
        feature_layer=run.grid_layer,
        faithfulness=faithful,
        n_images=seen,
        class_names=list(class_names) if class_names is not None else _attr(data, "class_names"),
        denormalize=denormalize or _mean_std(data),
        bootstrap=boot,
        attention_maps=pictures,
        inputs={
            "data": data_source,
            "image_size": list(run.size) if run.size else None,
            "contract": shared.to_json(),
            "models": {
                n: {"weights": c.weights, "contract": c.source} for n, c in contracts.items()
            },
            "faithfulness": {
                "images": faithfulness_images,
                "steps": faithfulness_steps,
                "measured_on": faithful_images,
            }
            if faithful
            else None,
            "processes": world,
        },
        state_count=state_elements(stats),
    )


class _Run:
    """The per-batch work of one comparison (what every process does with its batches)."""

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        wrappers: Mapping[str, IntermediateModel],
        resolved: Mapping[str, ModelLayers],
        stats: Mapping[str, ModelStats],
        methods: Sequence[str],
        baseline: str,
        num_classes: int | None,
        device: torch.device,
        faithfulness: bool,
        faithfulness_images: int | None,
        keeper: TopDisagreement,
        grid_layer: str,
    ) -> None:
        self.models, self.wrappers, self.resolved, self.stats = models, wrappers, resolved, stats
        self.methods, self.baseline, self.num_classes, self.device = (
            methods,
            baseline,
            num_classes,
            device,
        )
        self.faithfulness, self.faithfulness_images = faithfulness, faithfulness_images
        self.keeper, self.grid_layer = keeper, grid_layer
        self.gradient = any(m in GRADIENT_METHODS for m in methods)
        self.seen = 0
        self.faithful_images = 0
        self.size: tuple[int, int] | None = None
        self.feature_example: dict[str, Tensor] = {}

    def _faithful_count(self, batch: _Batch) -> int:
        if not self.faithfulness:
            return 0
        if self.faithfulness_images is None:
            return batch.images.shape[0]
        return int((batch.index < self.faithfulness_images).sum())

    def step(self, batch: _Batch, bar: Any) -> None:
        if self.num_classes is not None and batch.labels.numel():
            top = int(batch.labels.max())
            if top >= self.num_classes:
                raise DataError(
                    f"the data has labels up to {top} but the models have {self.num_classes} "
                    "outputs: the data is not the one the models were trained on"
                )
        images, labels = batch.images.to(self.device), batch.labels.to(self.device)
        masks = batch.masks.to(self.device) if batch.masks is not None else None
        index = batch.index.to(self.device)
        self.size = tuple(images.shape[-2:])
        k_faith = self._faithful_count(batch)
        base_feats: dict[str, Tensor] = {}
        base_cams: dict[str, Tensor] = {}
        panel_cams: dict[str, Tensor] = {}
        probs: dict[str, Tensor] = {}
        per_image: dict[str, dict[str, Tensor]] = {}
        for n, model in self.models.items():
            s, r = self.stats[n], self.resolved[n]
            x = images
            if self.wrappers[n].grad_from is None:  # a graph must exist even for frozen models
                x = images.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                logits, values = self.wrappers[n](x)
                act = values[r.cam_layer]
                grad = None
                if self.gradient:
                    score = logits.gather(1, labels[:, None]).sum()
                    grad = torch.autograd.grad(score, act)[0]
            logits = logits.detach()
            probs[n] = logits.softmax(1).gather(1, labels[:, None])[:, 0]
            per_image[n] = per_image_values(s.classification.update(logits, labels))
            for layer, vname in r.layers.items():
                feat = values[vname].detach()
                s.features[layer].update(feat, index=index)
                if n == self.baseline:
                    base_feats[layer] = feat
                else:
                    s.cka[layer].update(base_feats[layer], feat, batch_key=batch.number)
                if batch.number == 0 and layer == self.grid_layer:
                    self.feature_example[n] = feat[0].to("cpu", copy=True)
            for g in r.gates:
                s.gates[g].update(values[g].detach(), labels, index=index)
            act = act.detach()
            for i, m in enumerate(self.methods):
                raw = _maps(m, act, grad, self.size)
                cams = minmax(raw, flat="one", tol_ulps=0)
                s.concentration[m].update(cams)
                if masks is not None:
                    located = s.localization[m].update(cams, masks, labels)
                    if i == 0:
                        per_image[n].update(per_image_values(located))
                if n == self.baseline:
                    base_cams[m] = cams
                else:
                    agreed = s.agreement[m].update(cams, base_cams[m])
                    if i == 0:
                        for key in AGREEMENT:
                            s.agreement_ci[key].update(agreed[key].to(torch.float64), index)
                if i == 0:
                    panel_cams[n] = raw
                    self._faithfulness(s, model, images, cams, labels, k_faith, per_image[n], bar)
            bar.update(images.shape[0] - k_faith)
            del values, act, grad, x
        for n in self.models:
            if n == self.baseline:
                continue
            for t in TESTED:
                v, b = per_image[n].get(t.per_image), per_image[self.baseline].get(t.per_image)
                if v is not None and b is not None:
                    m = min(len(v), len(b))
                    self.stats[n].paired[t.per_image].update(v[:m], b[:m], index[:m])
        self._offer_panels(images, labels, masks, panel_cams, probs)
        self.seen += images.shape[0]
        self.faithful_images += k_faith

    def _faithfulness(
        self,
        s: ModelStats,
        model: nn.Module,
        images: Tensor,
        cams: Tensor,
        labels: Tensor,
        k: int,
        per_image: dict[str, Tensor],
        bar: Any,
    ) -> None:
        """Deletion/insertion and confidence on the batch's first ``k`` images, in chunks
        (so the progress bar moves within a batch); the per-image values join ``per_image``."""
        if k == 0:
            return
        chunk = 8
        found: dict[str, list[Tensor]] = {}
        with torch.no_grad():
            for start in range(0, k, chunk):
                sl = slice(start, min(start + chunk, k))
                f = s.faithfulness.update(model, images[sl], cams[sl], labels[sl])
                c = s.confidence.update(model, images[sl], cams[sl], labels[sl])
                for key, value in (*f.items(), *c.items()):
                    if key in ("deletion_auc", "insertion_auc", "drop", "increase"):
                        found.setdefault(key, []).append(value.to(torch.float64))
                bar.update(sl.stop - sl.start)
        per_image.update({key: torch.cat(parts) for key, parts in found.items()})

    def _offer_panels(self, images, labels, masks, panel_cams, probs) -> None:
        names = list(self.models)
        if len(names) > 1:
            base_norm = minmax(panel_cams[self.baseline], flat="one", tol_ulps=0)
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
            disagreement = 1 - probs[self.baseline]
        self.keeper.offer(disagreement, images, labels, masks, panel_cams, probs)


def _reduce(
    stats: Mapping[str, ModelStats], seen: int, faithful: int, keeper: TopDisagreement
) -> tuple[int, int, list]:
    """Sum every accumulator and count over the processes, and gather the panels (DDP)."""
    import torch.distributed as dist

    for s in stats.values():
        s.sync()
    count = torch.tensor([seen, faithful], dtype=torch.int64)
    dist.all_reduce(count)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, keeper.candidates())
    merged = TopDisagreement(keeper.n)
    for panels in gathered:
        for p in panels:
            merged.add(p)
    return int(count[0]), int(count[1]), merged.panels()


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
