"""Recipes: a base model plus the attention surgery to apply, as a small YAML file.

.. code-block:: yaml

    name: resnet18-se
    base: torchvision:resnet18        # or timm:resnet50, attnviz:small_resnet, package.module:factory
    base_kwargs: {num_classes: 10}
    weights: null                     # a local file of the *base* model, or
    pretrained: false                 # the library's own download (needs a network)
    attention: se                     # or none: the baseline
    where: residual                   # stages, a glob, a list of globs, or a type such as nn.Conv2d
    placement: after                  # or parallel / replace (module sites: globs or types)
    init: identity                    # or default (the paper's block)
    block_kwargs: {rd_ratio: 0.0625}
    input_size: [3, 64, 64]           # the example input used to find channel counts
    train: {...}                      # training settings, read by attnviz.training

:func:`load_model` turns a recipe, a checkpoint written by training or by
:func:`attnviz.save`, or a bare model reference into a model.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ._select import unknown_name_error
from .blocks import INITS, list_attention
from .errors import RecipeError
from .inputs import attach_contract, input_contract
from .surgery import PLACEMENTS, insert_attention
from .zoo import create_model, resolve_factory

__all__ = ["Recipe", "build_model", "load_model", "load_recipe", "parse_where"]


@dataclass
class Recipe:
    """A parsed recipe (see the module docs for the YAML keys)."""

    base: str
    name: str = ""
    description: str = ""
    base_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    pretrained: bool = False
    attention: str = "none"
    where: Any = "residual"
    placement: str = "after"
    init: str = "default"
    block_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: list[int] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # the default placement is left out, so a recipe's dict (a run's identity) is what it
        # was before placements existed
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "source" and not (f.name == "placement" and self.placement == "after")
        }


_KEYS = [f.name for f in fields(Recipe) if f.name != "source"]


def _check(recipe: Recipe, where: str) -> None:
    try:
        resolve_factory(recipe.base)
    except (KeyError, ValueError) as exc:
        raise RecipeError(f"{where}: base: {exc}") from exc
    if recipe.attention != "none" and recipe.attention not in list_attention():
        raise RecipeError(
            f"{where}: attention: {unknown_name_error('attention', recipe.attention, ['none', *list_attention()])}"
        )
    if recipe.init not in INITS:
        raise RecipeError(f"{where}: init: {unknown_name_error('init', recipe.init, list(INITS))}")
    if recipe.placement not in PLACEMENTS:
        raise RecipeError(
            f"{where}: placement: "
            f"{unknown_name_error('placement', recipe.placement, list(PLACEMENTS))}"
        )
    if recipe.input_size is not None and (
        len(recipe.input_size) != 3
        or not all(isinstance(v, int) and v > 0 for v in recipe.input_size)
    ):
        raise RecipeError(
            f"{where}: input_size must be [channels, height, width], got {recipe.input_size!r}"
        )
    for key in ("base_kwargs", "block_kwargs", "train"):
        if not isinstance(getattr(recipe, key), dict):
            raise RecipeError(f"{where}: {key} must be a mapping, got {getattr(recipe, key)!r}")
    from .settings import TrainError, settings_from_dict

    try:
        settings_from_dict(recipe.train, source="train")
    except TrainError as exc:
        raise RecipeError(f"{where}: {exc}") from exc


def recipe_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> Recipe:
    """Validate a recipe given as a dict (unknown keys raise with the closest valid key)."""
    if not isinstance(data, dict):
        raise RecipeError(
            f"{source}: a recipe must be a mapping of keys, got {type(data).__name__}"
        )
    for key in data:
        if key not in _KEYS:
            near = difflib.get_close_matches(str(key), _KEYS, n=3, cutoff=0.0)
            raise RecipeError(f"{source}: unknown key {key!r}; valid keys, closest first: {near}")
    if "base" not in data:
        raise RecipeError(
            f"{source}: missing the required key 'base' (e.g. base: torchvision:resnet18)"
        )
    recipe = Recipe(**{**data, "source": source})
    recipe.base_kwargs = recipe.base_kwargs or {}
    recipe.block_kwargs = recipe.block_kwargs or {}
    recipe.train = recipe.train or {}
    recipe.attention = recipe.attention or "none"
    _check(recipe, source)
    return recipe


def read_yaml(path: str | Path, what: str, error: type[Exception]) -> Any:
    """Parse a YAML file; a missing file is ``FileNotFoundError``, bad YAML ``error``, both naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc


#: The recipes and grids shipped with attnviz (``models/`` of the repository, package data of
#: the wheel: ``attnviz/models`` links to it in a checkout).
SHIPPED = Path(__file__).resolve().parent / "models"


def shipped(kind: str = "recipe") -> list[str]:
    """Names of the shipped recipes (``kind="recipe"``) or ablation grids (``"grid"``)."""
    if not SHIPPED.is_dir():
        return []
    names = sorted(p.stem for p in SHIPPED.glob("*.yaml"))
    grids = [n for n in names if n.startswith("ablation")]
    return grids if kind == "grid" else [n for n in names if n not in grids]


def find_shipped(ref: str | Path, kind: str = "recipe") -> Path:
    """``ref`` itself when it is a file, else the shipped recipe or grid of that name
    (``small-resnet-se``, ``ablation-small``); an unknown name lists the closest ones."""
    path = Path(ref)
    if path.is_file():
        return path
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    candidate = SHIPPED / f"{name}.yaml"
    if (path.parent == Path(".") or str(path.parent) in ("models", "")) and candidate.is_file():
        return candidate
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        raise FileNotFoundError(f"{kind} file not found: {path}")
    raise unknown_name_error(f"{kind} (a file or a shipped name)", str(ref), shipped(kind))


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file, or a shipped recipe by name (``small-resnet-se``)."""
    path = find_shipped(path)
    data = read_yaml(path, "recipe", RecipeError)
    recipe = recipe_from_dict(data, source=str(path))
    recipe.name = recipe.name or path.stem
    return recipe


def parse_where(where: Any) -> Any:
    """Recipe ``where`` values: strings stay globs/keywords, ``nn.Conv2d``-like names become classes."""
    if isinstance(where, list):
        return [parse_where(w) for w in where]
    if not isinstance(where, str):
        return where
    for prefix, module in (("nn.", "torch.nn"), ("torch.nn.", "torch.nn")):
        if where.startswith(prefix) and where[len(prefix) :].isidentifier():
            cls = getattr(importlib.import_module(module), where[len(prefix) :], None)
            if isinstance(cls, type) and issubclass(cls, nn.Module):
                return cls
    if ":" in where:
        mod, _, qual = where.partition(":")
        try:
            cls = getattr(importlib.import_module(mod), qual)
        except (ImportError, AttributeError):
            return where
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    return where


def build_model(recipe: Recipe, *, pretrained: bool | None = None) -> nn.Module:
    """The recipe's model: the base (with its weights, if any) plus the attention surgery."""
    use_pretrained = recipe.pretrained if pretrained is None else pretrained
    weights = recipe.weights
    if weights is not None and recipe.source and not Path(weights).is_absolute():
        candidate = Path(recipe.source).parent / weights
        weights = str(candidate if candidate.exists() else weights)
    model = create_model(
        recipe.base, pretrained=use_pretrained, weights=weights, **recipe.base_kwargs
    )
    if recipe.input_size:  # what the recipe says its inputs are (training records the rest)
        contract = input_contract(model)
        contract.size = (recipe.input_size[-2], recipe.input_size[-1])
        contract.source = f"recipe {recipe.source or recipe.name}"
        attach_contract(model, contract)
    if recipe.attention == "none":
        return model
    example = torch.randn(1, *recipe.input_size) if recipe.input_size else None
    return insert_attention(
        model,
        recipe.attention,
        parse_where(recipe.where),
        example_input=example,
        init=recipe.init,
        placement=recipe.placement,
        **recipe.block_kwargs,
    )


def load_model(
    ref: str | Path, *, device: str | torch.device = "cpu", trust_code: bool = False
) -> nn.Module:
    """A model from a recipe (``.yaml``), a checkpoint (``.safetensors`` or a run folder), or a reference.

    A run folder written by training resolves to its best or last checkpoint
    (never to a file outside the folder). Checkpoints are files: they may name only
    allowlisted code unless ``trust_code=True`` (see :func:`attnviz.load`); a recipe
    or a reference you give is yours and may name ``package.module:factory``.
    """
    from .fileformats import contained
    from .serialization import load

    text = str(ref)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or (
        ":" not in text and not path.exists() and text in shipped()
    ):
        return build_model(load_recipe(path)).to(device)
    if path.suffix == ".safetensors":
        return load(path, device=device, trust_code=trust_code)
    if path.is_dir():
        for name in ("best.safetensors", "model.safetensors", "last.safetensors"):
            for folder in (path, path / "checkpoints"):
                if (folder / name).is_file():
                    candidate = contained(folder, name, source=path)
                    return load(candidate, device=device, trust_code=trust_code)
        found = (
            sorted(
                p
                for p in (path / "checkpoints").glob("epoch-*.safetensors")
                if ".optim." not in p.name
            )
            if (path / "checkpoints").is_dir()
            else []
        )
        if found:
            candidate = contained(path / "checkpoints", found[-1].name, source=path)
            return load(candidate, device=device, trust_code=trust_code)
        raise FileNotFoundError(f"{path} holds no attnviz checkpoint (best/model.safetensors)")
    if ":" in text and not path.exists():
        return create_model(text).to(device)
    if not path.exists() and (path.suffix or "/" in text or "\\" in text):
        raise FileNotFoundError(
            f"cannot load a model from {text!r}: no such file or folder (give a recipe, a "
            "checkpoint or a run folder that exists, or a reference such as torchvision:resnet18)"
        )
    from ._select import closest

    raise FileNotFoundError(
        f"cannot load a model from {text!r}: it is not a file, a run folder, a shipped recipe "
        f"(closest: {closest(text, shipped(), n=4)}) or a reference such as torchvision:resnet18"
    )
