"""CamResult: the maps of one :func:`~attnviz.cam.compute_cam` call, by method and layer.

One method at one layer (the common case)::

    r = compute_cam(model, x, "layer4")
    r.maps          # [B, H, W]
    r.raw           # [B, h, w] at the layer's resolution, before resizing and normalising

Several methods and/or layers::

    r = compute_cam(model, x, ["layer3", "layer4"], ["gradcam", "layercam"])
    r["gradcam", "layer4"]          # one map [B, H, W]
    r["gradcam"]                    # that method's fused map (its map if one layer)
    r.by_method["layercam"]         # {layer: map}
    r.by_layer["layer3"]            # {method: map}
    r.fused_maps["layercam"]        # fused map of each method
    r.fused                         # the fused map when there is one method
    for (method, layer), m in r.items(): ...

Per image: ``r.targets`` (class indices, ``None`` for a callable target),
``r.scores`` (the explained score: the target logit, or the callable's value)
and ``r.probs`` (softmax probability of the target class, when the output is a
classifier's ``[B, classes]``).

Pictures (:mod:`attnviz.cam.display`)::

    r.show()                        # figure: images × maps, overlays labelled with targets
    r.overlay("gradcam", "layer4")  # [B, H, W, 3] blends
    r                               # in Jupyter: a table and the overlay grid

``r.images`` is the tensor given to ``compute_cam``, not a copy: it costs no memory
while the caller holds it anyway, but keeps it alive as long as the result
(``compute_cam(keep_images=False)`` drops it; ``r.show(images)`` then draws them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

__all__ = ["CamResult"]

Key = tuple[str, str]


@dataclass(frozen=True, eq=False)
class CamResult:
    """Maps of one or more (method, layer) pairs for a batch of images.

    Attributes:
        methods: method names, in the order asked.
        layers: layer names, in the order asked.
        all_maps: ``{(method, layer): [B, H, W]}``, resized and normalised.
        all_raw: ``{(method, layer): [B, h, w]}`` at the layer's resolution, after
            the ReLU (when ``relu=True``), before resizing and normalisation:
            ``maps == normalize(resize(raw))``.
        fused_maps: ``{method: [B, H, W]}``: the mean over layers of the per-image
            min-max scaled maps, then normalised like the maps (equal to the
            per-image scaled map when there is one layer).
        targets: ``[B]`` class indices explained (``None`` for a callable target).
        scores: ``[B]`` the explained score of each image (target logit or the
            callable's value), from the model in eval mode.
        probs: ``[B]`` softmax probability of the target class, or ``None``.
        normalize: the normalisation applied (``"per_image"``, ``"none"``, ``"shared"``).
        images: the input images ``[B, C, H, W]`` by reference (``None`` with
            ``keep_images=False``), for :meth:`show` and :meth:`overlay`.
        class_names: names of the class indices (display only).
        target_labels: per image, a description of a target that is not a class
            index (a callable), for display.
    """

    methods: tuple[str, ...]
    layers: tuple[str, ...]
    all_maps: dict[Key, Tensor]
    all_raw: dict[Key, Tensor]
    fused_maps: dict[str, Tensor]
    targets: Tensor | None
    scores: Tensor
    probs: Tensor | None = None
    normalize: str = "per_image"
    images: Tensor | None = None
    class_names: tuple[str, ...] | None = None
    target_labels: tuple[str, ...] | None = None

    # -- single (method, layer) ---------------------------------------------------
    @property
    def maps(self) -> Tensor:
        """The maps ``[B, H, W]`` of the only (method, layer) pair."""
        return self.all_maps[self._single("maps")]

    @property
    def raw(self) -> Tensor:
        """The raw maps ``[B, h, w]`` of the only (method, layer) pair (layer resolution)."""
        return self.all_raw[self._single("raw")]

    @property
    def fused(self) -> Tensor:
        """The fused map ``[B, H, W]`` of the only method (mean over its layers)."""
        if len(self.methods) != 1:
            raise ValueError(
                f"this result holds {len(self.methods)} methods {list(self.methods)}; use "
                "result.fused_maps[method] or result[method]"
            )
        return self.fused_maps[self.methods[0]]

    def _single(self, what: str) -> Key:
        if len(self.all_maps) != 1:
            raise ValueError(
                f"result.{what} needs one method and one layer; this result holds "
                f"methods {list(self.methods)} at layers {list(self.layers)}: use "
                "result[method, layer], result.by_method[method][layer] or result.fused"
            )
        return next(iter(self.all_maps))

    # -- lookup ---------------------------------------------------------------------
    def __getitem__(self, key: str | Key) -> Tensor:
        """``result[method, layer]`` → that map; ``result[method]`` → its fused map."""
        if isinstance(key, str):
            if key not in self.fused_maps:
                raise KeyError(f"no method {key!r} in this result; methods: {list(self.methods)}")
            if len(self.layers) == 1:
                return self.all_maps[key, self.layers[0]]
            return self.fused_maps[key]
        if key not in self.all_maps:
            raise KeyError(
                f"no (method, layer) {key!r} in this result; methods: {list(self.methods)}, "
                f"layers: {list(self.layers)}"
            )
        return self.all_maps[key]

    def raw_map(self, method: str, layer: str) -> Tensor:
        """The raw map of ``(method, layer)`` at the layer's resolution."""
        return self.all_raw[method, layer]

    @property
    def by_method(self) -> dict[str, dict[str, Tensor]]:
        """``{method: {layer: map}}``."""
        return {m: {layer: self.all_maps[m, layer] for layer in self.layers} for m in self.methods}

    @property
    def by_layer(self) -> dict[str, dict[str, Tensor]]:
        """``{layer: {method: map}}``."""
        return {layer: {m: self.all_maps[m, layer] for m in self.methods} for layer in self.layers}

    def keys(self) -> list[Key]:
        return list(self.all_maps)

    def items(self) -> list[tuple[Key, Tensor]]:
        return list(self.all_maps.items())

    def __iter__(self) -> Iterator[Key]:
        return iter(self.all_maps)

    def __len__(self) -> int:
        return len(self.all_maps)

    def __contains__(self, key: object) -> bool:
        return key in self.all_maps or key in self.fused_maps

    # -- conversions ----------------------------------------------------------------
    def replace(self, **changes: object) -> CamResult:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> CamResult:
        """Every tensor moved to ``device``."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return self.replace(
            all_maps={k: v.to(device) for k, v in self.all_maps.items()},
            all_raw={k: v.to(device) for k, v in self.all_raw.items()},
            fused_maps={k: v.to(device) for k, v in self.fused_maps.items()},
            targets=move(self.targets),
            scores=move(self.scores),
            probs=move(self.probs),
            images=move(self.images),
        )

    def cpu(self) -> CamResult:
        return self.to("cpu")

    # -- pictures -------------------------------------------------------------------
    def show(self, images: Any = None, **options: Any) -> Figure:
        """A figure of overlays: one row per image (its target), one column per map.

        ``images`` defaults to the kept input images. Options (see
        :func:`attnviz.cam.display.result_figure`): ``fused=True`` (one column per
        method), ``alpha``, ``cmap``, ``denormalize`` (``"auto"``: float images
        outside [0, 1] are min-max scaled for display; ``"imagenet"`` or
        ``(mean, std)`` for true colours), ``max_images``, ``title``, ``path`` (save PNG).
        """
        from .display import result_figure

        return result_figure(self, images, **options)

    def overlay(
        self, method: str | None = None, layer: str | None = None, **options: Any
    ) -> np.ndarray:
        """``[B, H, W, 3]`` blends of one map over the images (pytorch-grad-cam's ``show_cam_on_image``).

        ``method``/``layer`` choose the map (default: the only one; a method alone
        gives its fused map). Options: ``images``, ``alpha``, ``cmap``, ``denormalize``.
        """
        from .display import result_overlay

        return result_overlay(self, method, layer, **options)

    def _repr_html_(self) -> str:
        from .display import result_html

        return result_html(self)

    def __repr__(self) -> str:
        first = next(iter(self.all_maps.values()))
        return (
            f"CamResult(methods={list(self.methods)}, layers={list(self.layers)}, "
            f"maps={list(first.shape)}, normalize={self.normalize!r}, device={first.device})"
        )
