"""Which values to compare: corresponding layers across models, gates, the CAM layer.

Surgery keeps names, so ``layer3`` means the same place in a baseline and in
its SE variant. When a variant has an attention block right *after* a
layer (``where="stages"``), the layer is read after the block, because that
is what the rest of the network sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._capture import CapturePlan, plan_capture
from ..blocks import Gate
from ..errors import AttnvizError
from ..intermediates import resolve_names, value_shapes
from ..surgery import attention_modules, stage_sites
from ..surgery.spec import spec_of

__all__ = ["ModelLayers", "resolve_layers"]


@dataclass
class ModelLayers:
    """The names one model is read at: ``layers[i]`` corresponds to the baseline's ``layers[i]``."""

    plan: CapturePlan
    layers: dict[str, str]  # common layer name -> this model's value name
    cam_layer: str
    gates: dict[str, str] = field(
        default_factory=dict
    )  # gate value name -> stage (common layer name)

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.layers.values(), self.cam_layer, *self.gates]))


def _after_attention(model: nn.Module, name: str) -> str:
    """The output of an attention block placed right after ``name``, else ``name``."""
    spec = spec_of(model)
    for ins in reversed(spec.insertions if spec is not None else []):
        for s in ins.sites:
            if s.site == name:
                return s.path
    return name


def gate_names(model: nn.Module, plan: CapturePlan) -> list[str]:
    """Every value produced by a gate of an attention block (``layer1.0.attn.gate``), in order."""
    paths = set()
    for block_path, block in attention_modules(model).items():
        for sub, module in block.named_modules():
            if isinstance(module, Gate) or (
                sub.endswith("attn_pool") and isinstance(module, nn.Softmax)
            ):
                paths.add(f"{block_path}.{sub}")
    return [n for n in plan.names() if plan.values[n].module in paths]


def resolve_layers(
    models: dict[str, nn.Module],
    layers: str | Sequence[str],
    cam_layer: str | None,
    example: torch.Tensor,
) -> dict[str, ModelLayers]:
    """Resolve layer names on the baseline (the first model) and find them in every model.

    Raises ``ValueError`` naming each model and the layers it lacks when the
    models do not correspond.
    """
    names = list(models)
    plans = {n: plan_capture(m) for n, m in models.items()}
    base_plan = plans[names[0]]
    shapes = value_shapes(base_plan, example)
    if isinstance(layers, str) and layers == "stages":
        common = stage_sites(base_plan, shapes)
        if not common:
            raise AttnvizError(
                f"found no stage outputs in {names[0]!r}; pass layers=[...] explicitly"
            )
    else:
        common = resolve_names(base_plan, layers, example_input=example)
    not_maps = [n for n in common if len(shapes.get(n, ())) != 4]
    if not_maps:
        raise AttnvizError(f"layers must be 4-D feature maps; these are not: {not_maps}")
    cam = cam_layer or common[-1]
    if cam not in base_plan.values:
        raise AttnvizError(f"cam_layer {cam!r} is not a value of {names[0]!r}; e.g. {common[-1]!r}")

    missing: dict[str, list[str]] = {}
    for name, plan in plans.items():
        lacking = [n for n in dict.fromkeys([*common, cam]) if n not in plan.values]
        if lacking:
            missing[name] = lacking
    if missing:
        detail = "; ".join(f"{m!r} lacks {v[:6]}" for m, v in missing.items())
        raise AttnvizError(
            f"the models' layers do not correspond by name ({detail}). Compare models made from the same "
            f"base by attnviz.insert_attention, or pass layers= names that exist in every model"
        )
    out = {}
    for name, model in models.items():
        plan = plans[name]
        mapped = {c: _after_attention(model, c) for c in common}
        gates = gate_names(model, plan)
        order = {n: i for i, n in enumerate(plan.names())}
        stage_of = {}
        for g in gates:
            later = [c for c in common if order.get(mapped[c], -1) >= order[g]]
            stage_of[g] = later[0] if later else common[-1]
        out[name] = ModelLayers(plan, mapped, _after_attention(model, cam), stage_of)
    return out
