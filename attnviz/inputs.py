"""One input contract per model: size, normalisation, resize policy and class names.

A model's :class:`InputContract` says what its inputs are: the size it was
trained (or pretrained) at, the mean/std its inputs are normalised with, how a
photo of another size is brought to that size (``resize``), its class names, and
where its weights came from. It travels with the model:

* :func:`attnviz.create_model` attaches it (torchvision's weights' transforms and
  categories with ``pretrained=True``; timm's ``pretrained_cfg``; attnviz's nets
  the built-in data's statistics); training records what it trained on;
* :func:`attnviz.save` writes it into the file (the spec's ``extra["input"]``)
  and :func:`attnviz.load` restores it;
* every consumer reads it through :func:`input_contract`: ``attnviz cam``
  resizes photos by it and names classes with it, ``compare`` and ``ablate``
  build their data by it, and models compared together must agree on it
  (:func:`common_contract`).

Files written before the contract existed (``extra["data"]``) are read too.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import AttnvizError, FileFormatError, InputContractError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESIZE_POLICIES",
    "InputContract",
    "attach_contract",
    "common_contract",
    "input_contract",
    "load_image",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``"crop"``: scale so the shorter side is ``size / crop_pct``, then keep the centre ``size``
#: (torchvision's weights' ``transforms()``, timm's eval transform); ``"stretch"``: scale to
#: ``size`` whatever the aspect ratio (what training on pre-sized or folder images did).
RESIZE_POLICIES = ("crop", "stretch")

_ATTR = "_attnviz_input"
_SPEC_KEY = "input"


@dataclass
class InputContract:
    """What a model expects as input (see the module docs).

    ``weights``: where the weights came from, in words (``"random initialisation"``,
    ``"torchvision IMAGENET1K_V1"``, ``"trained on synthetic"``...); ``source``: where
    this contract was read from (for the report).
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: str = "crop"
    crop_pct: float = 0.875
    class_names: list[str] | None = None
    weights: str = "unknown"
    source: str = "default (ImageNet statistics, 224 px)"
    data: str | None = field(default=None)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def class_name(self, k: int) -> str:
        """The name of class ``k`` (``"class k"`` when the model has no names)."""
        names = self.class_names
        return names[k] if names and 0 <= k < len(names) else f"class {k}"

    def class_index(self, name: str) -> int:
        """The index of class ``name`` (exact, then case-insensitive); an error lists the closest."""
        from ._select import unknown_name_error

        names = self.class_names or []
        if name in names:
            return names.index(name)
        lower = [n.lower() for n in names]
        if name.lower() in lower:
            return lower.index(name.lower())
        if not names:
            raise InputContractError(
                f"the model has no class names, so {name!r} cannot be looked up; give a class index"
            )
        raise unknown_name_error("class", name, names)

    @property
    def random_weights(self) -> bool:
        return self.weights.startswith("random")

    @property
    def weights_known(self) -> bool:
        """Whether the weights were trained or pretrained (the contract is then a fact)."""
        return not self.random_weights and self.weights != "unknown"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["size"], out["mean"], out["std"] = list(self.size), list(self.mean), list(self.std)
        return out

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> InputContract:
        """Validate a contract read from a file (``source`` names it in errors)."""
        if not isinstance(data, dict):
            raise FileFormatError(f"{source}: the input contract must be a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        extra = sorted(set(data) - known)
        if extra:
            raise FileFormatError(f"{source}: unknown input contract fields {extra}")
        kw = {k: v for k, v in data.items() if k != "source"}
        try:
            contract = cls(**kw, source=source)
            contract.size = _hw(contract.size)
            contract.mean = tuple(float(v) for v in contract.mean)
            contract.std = tuple(float(v) for v in contract.std)
            contract.crop_pct = float(contract.crop_pct)
            problem = contract._problem()
        except (TypeError, ValueError) as exc:
            raise FileFormatError(f"{source}: not a valid input contract ({exc})") from None
        if problem:
            raise FileFormatError(f"{source}: not a valid input contract: {problem}")
        return contract

    def _problem(self) -> str | None:
        if len(self.mean) != len(self.std) or not self.mean or len(self.mean) > 64:
            return (
                f"mean and std need the same number (1-64) of values, got {self.mean}, {self.std}"
            )
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or min(self.std) <= 0:
            return f"mean and std must be finite and std > 0, got {self.mean}, {self.std}"
        if self.resize not in RESIZE_POLICIES:
            return f"resize must be one of {list(RESIZE_POLICIES)}, got {self.resize!r}"
        if not 0.1 <= float(self.crop_pct) <= 1.0:
            return f"crop_pct must be in [0.1, 1], got {self.crop_pct!r}"
        if self.class_names is not None and (
            not isinstance(self.class_names, list)
            or len(self.class_names) > 100_000
            or not all(isinstance(c, str) and len(c) <= 256 for c in self.class_names)
        ):
            return "class_names must be a list of short strings"
        if not isinstance(self.weights, str) or (
            self.data is not None and not isinstance(self.data, str)
        ):
            return "weights and data must be text"
        return None

    def differences(self, other: InputContract) -> list[str]:
        """What differs between two contracts for running the same images through both."""
        out = []
        for key in ("size", "mean", "std", "resize"):
            a, b = getattr(self, key), getattr(other, key)
            if key in ("mean", "std"):
                same = len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b))
            else:
                same = a == b
            if not same:
                out.append(
                    f"{key} {list(a) if isinstance(a, tuple) else a} vs {list(b) if isinstance(b, tuple) else b}"
                )
        if self.class_names and other.class_names and self.class_names != other.class_names:
            out.append(f"class names {self.class_names[:4]}... vs {other.class_names[:4]}...")
        return out


def _hw(size: Any) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    hw = tuple(int(v) for v in size)[-2:]
    if len(hw) != 2 or not all(1 <= v <= 16384 for v in hw):
        raise AttnvizError(f"size must be (height, width) in 1..16384, got {size!r}")
    return hw  # type: ignore[return-value]


def attach_contract(model: nn.Module, contract: InputContract) -> nn.Module:
    """Give ``model`` its contract (kept through surgery, saved by :func:`attnviz.save`)."""
    setattr(model, _ATTR, copy.deepcopy(contract))
    return model


def attached_contract(model: nn.Module) -> InputContract | None:
    contract = getattr(model, _ATTR, None)
    return contract if isinstance(contract, InputContract) else None


def contract_from_spec(extra: dict[str, Any] | None, source: str) -> InputContract | None:
    """The contract a saved file records (``extra["input"]``, or 0.1's ``extra["data"]``)."""
    extra = extra or {}
    if isinstance(extra.get(_SPEC_KEY), dict):
        return InputContract.from_json(extra[_SPEC_KEY], source=source)
    data = extra.get("data")
    if isinstance(data, dict):  # attnviz 0.1: recorded by training, stretch-resized images
        legacy = {"resize": "stretch", "weights": "trained", "data": data.get("source")}
        if data.get("size"):
            legacy["size"] = data["size"]
        for key in ("mean", "std", "class_names"):
            if data.get(key) is not None:
                legacy[key] = data[key]
        return InputContract.from_json(legacy, source=source)
    return None


def spec_entry(contract: InputContract) -> dict[str, Any]:
    """The ``extra`` entry :func:`attnviz.save` writes for a contract."""
    return {_SPEC_KEY: contract.to_json()}


def _from_base(model: nn.Module) -> InputContract:
    """A contract derived from the model itself when nothing was recorded (a guess)."""
    info = InputContract()
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        info = replace(
            info,
            size=_hw(cfg["input_size"]),
            mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(cfg.get("std", IMAGENET_STD)),
            crop_pct=float(cfg.get("crop_pct", 0.875) or 0.875),
            source=f"timm pretrained_cfg of {cfg.get('architecture', type(model).__name__)}",
        )
    elif type(model).__module__ == "attnviz.nets":  # (a rewritten class keeps its module)
        from .data.synthetic import MEAN, SHAPE_NAMES, STD

        classes = getattr(model, "num_classes", None)
        names = list(SHAPE_NAMES[:classes]) if classes and classes <= len(SHAPE_NAMES) else None
        info = replace(
            info,
            size=(64, 64),
            mean=tuple(MEAN),
            std=tuple(STD),
            resize="stretch",
            class_names=names,
            source="attnviz net: the built-in synthetic data",
        )
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and conv.in_channels != len(info.mean):
        info.mean, info.std = (info.mean[0],) * conv.in_channels, (info.std[0],) * conv.in_channels
    return info


def input_contract(model: nn.Module) -> InputContract:
    """The model's input contract: the one attached to it, else a guess from its architecture.

    :func:`attnviz.create_model`, :func:`attnviz.load`, recipes and training attach
    one; a model built elsewhere gets timm's ``pretrained_cfg`` or ImageNet's
    defaults, with ``weights="unknown"`` (a guess, which :func:`common_contract`
    does not hold against other models).
    """
    contract = attached_contract(model)
    return copy.deepcopy(contract if contract is not None else _from_base(model))


def common_contract(
    contracts: dict[str, InputContract], *, size: tuple[int, int] | None = None
) -> InputContract:
    """The one contract several models share, or :class:`InputContractError` naming the differences.

    ``size`` overrides every model's size (the caller records that it did).
    """
    if size is not None:
        contracts = {n: replace(c, size=_hw(size)) for n, c in contracts.items()}
    # Only what weights were trained or pretrained on is a fact; a random or unknown model
    # has nothing to disagree about (its contract is a guess from the architecture).
    facts = {n: c for n, c in contracts.items() if c.weights_known}
    if not facts:
        return next(iter(contracts.values()))
    names = list(facts)
    first = facts[names[0]]
    problems = []
    for name in names[1:]:
        diff = first.differences(contracts[name])
        if diff:
            problems.append(f"{names[0]!r} vs {name!r}: {'; '.join(diff)}")
    if problems:
        hint = (
            " (pass --size H W to run all at one size)"
            if all(d.startswith("size") for p in problems for d in p.split(": ", 1)[1].split("; "))
            else ""
        )
        raise InputContractError(
            "the models expect different inputs, so one set of images cannot be right for all: "
            + " | ".join(problems)
            + hint
        )
    names_known = next(
        (c.class_names for c in (facts or contracts).values() if c.class_names), None
    )
    return replace(first, class_names=first.class_names or names_known)


def load_image(path: str | Path, contract: InputContract) -> tuple[torch.Tensor, np.ndarray]:
    """``(normalised tensor [1, C, H, W], display image [H, W, C] in [0, 1])`` for a photo.

    The photo is turned upright from its EXIF orientation and brought to the
    contract's size by its resize policy (``crop``: the model's own eval transform),
    then normalised. Unreadable files raise naming the file.
    """
    from .data.photo import fit_photo, open_photo
    from .errors import DataError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        img = open_photo(path)
    except OSError as exc:
        raise DataError(str(exc)) from None
    if contract.channels == 1:
        img = img.convert("L").convert("RGB")
    img, _ = fit_photo(img, None, contract.size, contract.resize, crop_fraction=contract.crop_pct)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if contract.channels == 1:
        arr = arr[:, :, :1]
    x = torch.from_numpy(arr).permute(2, 0, 1)
    mean = torch.tensor(contract.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(contract.std, dtype=torch.float32)[:, None, None]
    return ((x - mean) / std)[None], arr
