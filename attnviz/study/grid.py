"""Ablation grids: recipes x attention x placement x block kwargs x seeds, as YAML.

.. code-block:: yaml

    name: ablation-small
    data: synthetic
    recipes: [small-resnet.yaml]            # base recipes (paths relative to this file)
    attention: [none, se, eca, cbam]
    where: [residual, stages]               # sites: residual, stages, globs
    placement: [after]                      # after, parallel, replace (module sites)
    block_kwargs:                           # per attention: a list of kwarg sets to sweep
      se: [{rd_ratio: 0.25}, {rd_ratio: 0.0625}]
    seeds: [0, 1]
    train: {epochs: 4, train_images: 3000}  # overrides of every recipe's train settings
    finetune_from: null                     # a base checkpoint: fine-tune instead of training from scratch
    finetune: all                           # all | attention | attention+head (with finetune_from)
    eval: {images: 512, faithfulness_images: 128, cam_method: gradcam}

``attention: none`` is the baseline: it gets one cell per recipe and seed,
whatever the sites, placements and kwargs.

Without an ``attention`` axis each recipe is one setting with its own surgery
(attention, sites, placement, kwargs): the way to compare families that sit in
different places (a channel gate on the residual branch, a self-attention
block replacing the last stage's convolutions) in one grid; ``where``,
``placement`` and ``block_kwargs`` then belong to the recipes.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from .._select import unknown_name_error
from ..blocks import list_attention
from ..errors import GridError
from ..settings import FINETUNE_MODES
from ..surgery import PLACEMENTS

__all__ = ["Cell", "Grid", "GridError", "load_grid"]

_KEYS = (
    "name",
    "description",
    "data",
    "recipes",
    "attention",
    "where",
    "placement",
    "block_kwargs",
    "seeds",
    "train",
    "finetune_from",
    "finetune",
    "eval",
)
_EVAL_KEYS = ("images", "faithfulness_images", "cam_method", "batch_size")


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    recipe: str
    attention: str
    where: Any
    block_kwargs: dict
    seed: int
    placement: str = "after"

    @property
    def setting(self) -> str:
        """The cell without its seed (what seeds are averaged over)."""
        recipe = Path(self.recipe).stem
        if self.attention == "none":
            return f"{recipe}/none"
        kw = ",".join(f"{k}={v}" for k, v in sorted(self.block_kwargs.items()))
        where = self.where if isinstance(self.where, str) else "+".join(map(str, self.where))
        how = "" if self.placement == "after" else f":{self.placement}"
        return f"{recipe}/{self.attention}{how}@{where}" + (f"[{kw}]" if kw else "")

    @property
    def id(self) -> str:
        """A stable folder name: readable prefix plus a hash of the full settings."""
        fields = [self.recipe, self.attention, self.where, self.block_kwargs, self.seed]
        if self.placement != "after":  # cells of grids without placements keep their ids
            fields.append(self.placement)
        payload = json.dumps(fields, sort_keys=True)
        digest = hashlib.sha1(payload.encode()).hexdigest()[:8]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.setting)
        return f"{safe}_s{self.seed}_{digest}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "attention": self.attention,
            "where": self.where,
            "block_kwargs": self.block_kwargs,
            "seed": self.seed,
            "placement": self.placement,
            "setting": self.setting,
            "id": self.id,
        }


@dataclass
class Grid:
    name: str
    data: str
    recipes: list[str]
    attention: list[str]
    where: list[Any]
    block_kwargs: dict[str, list[dict]]
    seeds: list[int]
    train: dict[str, Any] = field(default_factory=dict)
    finetune_from: str | None = None
    finetune: str = "all"
    eval: dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"
    placement: list[str] = field(default_factory=lambda: ["after"])
    #: Without an attention axis: each recipe's own surgery (attention, where, kwargs, placement).
    own: dict[str, dict[str, Any]] | None = None

    def cells(self) -> list[Cell]:
        out: list[Cell] = []
        if self.own is not None:
            for recipe, seed in product(self.recipes, self.seeds):
                r = self.own[recipe]
                if r["attention"] == "none":
                    out.append(Cell(recipe, "none", "none", {}, seed))
                    continue
                where, kwargs, how = r["where"], dict(r["block_kwargs"]), r["placement"]
                out.append(Cell(recipe, r["attention"], where, kwargs, seed, how))
            return out
        for recipe, attention, seed in product(self.recipes, self.attention, self.seeds):
            if attention == "none":
                out.append(Cell(recipe, "none", "none", {}, seed))
                continue
            for where, how, kwargs in product(
                self.where, self.placement, self.block_kwargs.get(attention, [{}])
            ):
                out.append(Cell(recipe, attention, where, dict(kwargs), seed, how))
        return out


def _axis(data: dict, key: str, source: str) -> list:
    value = data.get(key)
    if value is None:
        raise GridError(f"{source}: missing the axis {key!r}")
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise GridError(f"{source}: the axis {key!r} is empty; give at least one value")
    return value


def grid_from_dict(
    data: dict[str, Any], *, source: str = "<dict>", root: Path | None = None
) -> Grid:
    """Validate a grid (every error is raised here, before anything runs)."""
    from ..recipes import RecipeError, load_recipe

    if not isinstance(data, dict):
        raise GridError(f"{source}: a grid must be a mapping of keys, got {type(data).__name__}")
    for key in data:
        if key not in _KEYS:
            raise GridError(
                f"{source}: unknown key {key!r}; valid keys, closest first: {difflib.get_close_matches(str(key), _KEYS, n=4, cutoff=0.0)}"
            )
    root = root or Path.cwd()
    recipes = [
        str(p if Path(p).is_absolute() else (root / p)) for p in _axis(data, "recipes", source)
    ]
    own: dict[str, dict[str, Any]] = {}
    for path in recipes:
        try:
            recipe = load_recipe(path)
        except (FileNotFoundError, RecipeError) as exc:
            raise GridError(f"{source}: recipes: {exc}") from exc
        own[path] = {
            "attention": recipe.attention,
            "where": recipe.where,
            "block_kwargs": recipe.block_kwargs,
            "placement": recipe.placement,
        }
    if "attention" not in data:
        given = [k for k in ("where", "placement", "block_kwargs") if k in data]
        if given:
            raise GridError(
                f"{source}: {given[0]} is given but there is no attention axis: without one each "
                "recipe is a setting with its own surgery; add an attention axis or move "
                f"{given[0]} into the recipes"
            )
    attention = (
        [str(a) for a in _axis(data, "attention", source)]
        if "attention" in data
        else sorted({r["attention"] for r in own.values()})
    )
    valid = ["none", *list_attention()]
    for a in attention:
        if a not in valid:
            raise GridError(f"{source}: attention: {unknown_name_error('attention', a, valid)}")
    placement = (
        [str(p) for p in _axis(data, "placement", source)] if "placement" in data else ["after"]
    )
    for p in placement:
        if p not in PLACEMENTS:
            raise GridError(
                f"{source}: placement: {unknown_name_error('placement', p, list(PLACEMENTS))}"
            )
    where = _axis(data, "where", source) if "where" in data else ["residual"]
    seeds = _axis(data, "seeds", source) if "seeds" in data else [0]
    if not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{source}: seeds must be integers, got {seeds}")
    kwargs = data.get("block_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise GridError(
            f"{source}: block_kwargs must map attention names to lists of kwargs, got {kwargs!r}"
        )
    for a, sets in kwargs.items():
        if a not in attention:
            raise GridError(
                f"{source}: block_kwargs names {a!r}, which is not on the attention axis {attention}"
            )
        if not isinstance(sets, list) or not sets or not all(isinstance(s, dict) for s in sets):
            raise GridError(
                f"{source}: block_kwargs[{a!r}] must be a non-empty list of mappings, got {sets!r}"
            )
    finetune = data.get("finetune", "all")
    if finetune not in FINETUNE_MODES:
        raise GridError(
            f"{source}: finetune: {unknown_name_error('finetune mode', finetune, list(FINETUNE_MODES))}"
        )
    base_ckpt = data.get("finetune_from")
    if base_ckpt is not None:
        base_ckpt = str(base_ckpt if Path(base_ckpt).is_absolute() else root / base_ckpt)
        if not Path(base_ckpt).exists():
            raise GridError(f"{source}: finetune_from: no such checkpoint {base_ckpt}")
    ev = data.get("eval") or {}
    for key in ev:
        if key not in _EVAL_KEYS:
            raise GridError(f"{source}: unknown eval key {key!r}; valid: {list(_EVAL_KEYS)}")
    grid = Grid(
        name=str(data.get("name") or Path(source).stem),
        data=str(data.get("data", "synthetic")),
        recipes=recipes,
        attention=attention,
        where=where,
        block_kwargs={a: [dict(s) for s in sets] for a, sets in kwargs.items()},
        seeds=seeds,
        train=dict(data.get("train") or {}),
        finetune_from=base_ckpt,
        finetune=finetune,
        eval=dict(ev),
        source=source,
        placement=placement,
        own=None if "attention" in data else own,
    )
    _check_blocks(grid)
    return grid


#: The map size blocks are checked at (on the meta device): every usual window and block grid
#: divides it (840 = 2^3 * 3 * 5 * 7), and blocks with a position embedding need one.
_CHECK_SIZE = (840, 840)


def _check_blocks(grid: Grid) -> None:
    """Build each attention block once with its kwargs, so a bad kwarg fails now."""
    import torch

    from ..blocks import attention_block

    if grid.own is not None:
        pairs = [(r["attention"], r["block_kwargs"]) for r in grid.own.values()]
    else:
        pairs = [(a, kw) for a in grid.attention for kw in grid.block_kwargs.get(a, [{}])]
    for a, kwargs in pairs:
        if a == "none":
            continue
        try:
            with torch.device("meta"):
                attention_block(a, 64, **{"feat_size": _CHECK_SIZE, **kwargs})
        except (KeyError, TypeError, ValueError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise GridError(f"{grid.source}: block_kwargs for {a!r} {kwargs}: {msg}") from exc


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid file, or a shipped grid by name (``ablation-small``)."""
    from ..recipes import find_shipped, read_yaml

    path = find_shipped(path, "grid")
    data = read_yaml(path, "grid", GridError)
    return grid_from_dict(data, source=str(path), root=path.parent)
