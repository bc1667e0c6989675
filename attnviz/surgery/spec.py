"""The surgery spec: what was inserted where, as plain data, and its one owner.

A modified model carries a :class:`SurgerySpec` (base model reference, then
one :class:`Insertion` per ``insert_attention`` call, each with its
:class:`Site` list). It is what :func:`attnviz.surgery_spec` returns as JSON,
what :func:`attnviz.save` writes into a safetensors file and what
:func:`attnviz.load` replays. Every reader of a model's surgery goes through
the accessors here (:func:`spec_of`, :func:`base_class`,
:func:`attention_modules`...), never through the raw marker attributes.

:meth:`SurgerySpec.from_json` is the only way in from a file: the JSON is
validated against :data:`attnviz.fileformats.SURGERY_SPEC` (types, sizes,
names that reach generated code must be dotted Python identifiers), so a
crafted spec fails here with a :class:`~attnviz.errors.FileFormatError`.

Imports only the leaf modules ``attnviz.errors``, ``attnviz.fileformats`` and
``attnviz._version``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from .._version import __version__
from ..errors import SurgeryError
from ..fileformats import validate

__all__ = [
    "ATTN_ATTR",
    "BASE_CLASS_ATTR",
    "SPEC_ATTR",
    "SPEC_FORMAT",
    "Insertion",
    "Site",
    "SurgerySpec",
    "attention_keys",
    "attention_modules",
    "base_class",
    "is_rewritten",
    "set_spec",
    "spec_of",
]

#: The attribute of a modified model that holds its :class:`SurgerySpec`.
SPEC_ATTR = "_attnviz_surgery"
#: On a rewritten owner's class: the original class it subclasses.
BASE_CLASS_ATTR = "_attnviz_base_class"
#: On a rewritten owner's class: the names of the attention children it owns.
ATTN_ATTR = "_attnviz_attn"
SPEC_FORMAT = "attnviz.surgery/1"


@dataclass
class Site:
    """Where one block goes: after value ``site``, inside the forward of module ``owner``.

    ``local`` is the value's name inside the owner's own graph ("" for the
    owner's output), ``attr`` the block's attribute on the owner, ``shape``
    the feature map's shape at the example input.
    """

    site: str
    owner: str
    local: str
    attr: str
    channels: int
    shape: tuple[int, ...] = ()

    @property
    def path(self) -> str:
        """The block's module path (``layer1.0.attn``)."""
        return f"{self.owner}.{self.attr}" if self.owner else self.attr

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"shape": list(self.shape)}


@dataclass
class Insertion:
    """One ``insert_attention`` call: the block, its settings (JSON form) and its sites."""

    attention: str
    init: str
    kwargs: dict[str, Any]
    where: Any
    example_input_shape: list[int] | None
    sites: list[Site]

    def to_json(self) -> dict[str, Any]:
        return {
            "attention": self.attention,
            "init": self.init,
            "kwargs": copy.deepcopy(self.kwargs),
            "where": copy.deepcopy(self.where),
            "example_input_shape": self.example_input_shape,
            "sites": [s.to_json() for s in self.sites],
        }


@dataclass
class SurgerySpec:
    """A model's surgery: base reference (``{"ref", "kwargs"}`` or None) and insertions."""

    base: dict[str, Any] | None = None
    insertions: list[Insertion] = field(default_factory=list)
    extra: dict[str, Any] | None = None
    attnviz_version: str = __version__
    format: str = SPEC_FORMAT

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.format,
            "attnviz_version": self.attnviz_version,
            "base": copy.deepcopy(self.base),
            "insertions": [i.to_json() for i in self.insertions],
        }
        if self.extra is not None:
            out["extra"] = copy.deepcopy(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Any, *, source: str = "<spec>") -> SurgerySpec:
        """Validate JSON (from a file or a dict) and build the spec; see the module docs."""
        validate(data, "surgery spec", source)
        insertions = [
            Insertion(
                attention=ins["attention"],
                init=ins["init"],
                kwargs=copy.deepcopy(ins.get("kwargs") or {}),
                where=copy.deepcopy(ins.get("where")),
                example_input_shape=ins.get("example_input_shape"),
                sites=[
                    Site(
                        s["site"],
                        s["owner"],
                        s["local"],
                        s["attr"],
                        s["channels"],
                        tuple(s.get("shape", ())),
                    )
                    for s in ins["sites"]
                ],
            )
            for ins in data["insertions"]
        ]
        base = data.get("base")
        return cls(
            base={"ref": base["ref"], "kwargs": dict(base.get("kwargs") or {})} if base else None,
            insertions=insertions,
            extra=copy.deepcopy(data.get("extra")),
            attnviz_version=data.get("attnviz_version", ""),
        )

    def sites(self) -> list[Site]:
        """Every site of every insertion, in insertion order."""
        return [s for ins in self.insertions for s in ins.sites]

    def copy(self) -> SurgerySpec:
        return copy.deepcopy(self)


def spec_of(model: nn.Module) -> SurgerySpec | None:
    """The surgery a model carries (``None`` for a model without attnviz surgery or spec)."""
    spec = getattr(model, SPEC_ATTR, None)
    return spec if isinstance(spec, SurgerySpec) else None


def set_spec(model: nn.Module, spec: SurgerySpec | None) -> None:
    """Attach (or, with ``None``, remove) a model's surgery spec."""
    if spec is None:
        if hasattr(model, SPEC_ATTR):
            delattr(model, SPEC_ATTR)
        return
    setattr(model, SPEC_ATTR, spec)


def base_class(module: nn.Module) -> type:
    """The class a rewritten owner subclasses (its own class when not rewritten)."""
    return getattr(type(module), BASE_CLASS_ATTR, type(module))


def is_rewritten(module: nn.Module) -> bool:
    """Whether surgery swapped this module's class for a rewritten subclass."""
    return getattr(type(module), BASE_CLASS_ATTR, None) is not None


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The attention blocks of a modified model by path (``layer1.0.attn``)."""
    spec = spec_of(model)
    if spec is None:
        return {}
    out = {}
    for s in spec.sites():
        try:
            out[s.path] = model.get_submodule(s.path)
        except AttributeError:
            raise SurgeryError(
                f"the model's surgery spec names a block at {s.path!r} that the model does not hold"
            ) from None
    return out


def attention_keys(model: nn.Module) -> list[str]:
    """``state_dict`` keys that belong to attention blocks (everything else is the base's)."""
    prefixes = tuple(f"{p}." for p in attention_modules(model))
    return [k for k in model.state_dict() if k.startswith(prefixes)] if prefixes else []


def dumps(spec: SurgerySpec) -> str:
    """The spec as compact JSON text (what a safetensors file's metadata holds)."""
    return json.dumps(spec.to_json())
