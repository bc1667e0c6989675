"""The surgery spec: what was inserted where, as plain data, and its one owner.

A modified model carries a :class:`SurgerySpec` (base model reference, then
one :class:`Insertion` per ``insert_attention`` call, each with its
placement and its :class:`Site` list). It is what :func:`attnviz.surgery_spec` returns as JSON,
what :func:`attnviz.save` writes into a safetensors file and what
:func:`attnviz.load` replays. Every reader of a model's surgery goes through
the accessors here (:func:`spec_of`, :func:`base_class`,
:func:`attention_modules`...), never through the raw marker attributes.

:meth:`SurgerySpec.from_json` is the only way in from a file: the JSON is
validated against :data:`attnviz.fileformats.SURGERY_SPEC` (types, sizes,
names that reach generated code must be dotted Python identifiers), so a
crafted spec fails here with a :class:`~attnviz.errors.FileFormatError`.

Two format versions: ``attnviz.surgery/1`` (every block *after* its site, as
attnviz 0.1 wrote) and ``attnviz.surgery/2``, which adds the placement of each
insertion and, per site, the input shape (``parallel`` and ``replace``) and the
base keys a ``replace`` removed. A spec is written in the oldest version that
holds it, so files without the new placements stay readable by older readers;
both versions are read.

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
    "SPEC_FORMATS",
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
#: The spec format versions read; the first holds only ``after`` insertions.
SPEC_FORMATS = ("attnviz.surgery/1", "attnviz.surgery/2")
#: The newest format (what a spec with a ``parallel`` or ``replace`` insertion is written in).
SPEC_FORMAT = SPEC_FORMATS[-1]


@dataclass
class Site:
    """Where one block goes: at value ``site``, inside the forward of module ``owner``.

    ``local`` is the value's name inside the owner's own graph ("" for the
    owner's output), ``attr`` the block's attribute on the owner, ``shape``
    the site's output shape at the example input and ``channels`` the
    block's input channels. For ``parallel`` and ``replace`` the site is a
    module call: ``in_shape`` is its input's shape (the block maps
    ``in_shape`` to ``shape``); for ``replace`` ``owner.attr`` is the replaced
    module itself and ``replaced`` lists the ``state_dict`` keys it removed.
    """

    site: str
    owner: str
    local: str
    attr: str
    channels: int
    shape: tuple[int, ...] = ()
    in_shape: tuple[int, ...] = ()
    replaced: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """The block's module path (``layer1.0.attn``)."""
        return f"{self.owner}.{self.attr}" if self.owner else self.attr

    def block_args(self) -> dict[str, Any]:
        """``out_channels``, ``stride`` and ``feat_size`` of the block at this site.

        ``feat_size`` is the map the block reads (H, W); a site without a
        recorded shape gives none. The stride is the input's size over the
        output's (checked integral when the site was planned or read).
        """
        source = self.in_shape or self.shape
        if len(source) != 4:
            return {}
        args: dict[str, Any] = {"feat_size": (int(source[2]), int(source[3]))}
        if self.in_shape and len(self.shape) == 4:
            args["out_channels"] = int(self.shape[1])
            args["stride"] = int(self.in_shape[2]) // max(int(self.shape[2]), 1)
        return args

    def to_json(self) -> dict[str, Any]:
        out = asdict(self) | {"shape": list(self.shape)}
        del out["in_shape"], out["replaced"]
        if self.in_shape:
            out["in_shape"] = list(self.in_shape)
        if self.replaced:
            out["replaced"] = list(self.replaced)
        return out


@dataclass
class Insertion:
    """One ``insert_attention`` call: the block, its settings (JSON form), placement and sites."""

    attention: str
    init: str
    kwargs: dict[str, Any]
    where: Any
    example_input_shape: list[int] | None
    sites: list[Site]
    placement: str = "after"

    def to_json(self) -> dict[str, Any]:
        out = {
            "attention": self.attention,
            "init": self.init,
            "kwargs": copy.deepcopy(self.kwargs),
            "where": copy.deepcopy(self.where),
            "example_input_shape": self.example_input_shape,
            "sites": [s.to_json() for s in self.sites],
        }
        if self.placement != "after":
            out["placement"] = self.placement
        return out


@dataclass
class SurgerySpec:
    """A model's surgery: base reference (``{"ref", "kwargs"}`` or None) and insertions."""

    base: dict[str, Any] | None = None
    insertions: list[Insertion] = field(default_factory=list)
    extra: dict[str, Any] | None = None
    attnviz_version: str = __version__

    @property
    def format(self) -> str:
        """The oldest format version that holds this spec (see the module docs)."""
        if all(i.placement == "after" for i in self.insertions):
            return SPEC_FORMATS[0]
        return SPEC_FORMAT

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
                        tuple(s.get("in_shape", ())),
                        tuple(s.get("replaced", ())),
                    )
                    for s in ins["sites"]
                ],
                placement=ins.get("placement", "after"),
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

    def replaced_sites(self) -> list[Site]:
        """The sites whose module a ``replace`` insertion swapped for its block."""
        return [s for ins in self.insertions if ins.placement == "replace" for s in ins.sites]

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
