"""The formats of the files attnviz writes, and the one way it reads them back.

Every file another person could hand you (a saved model's metadata, a run
folder's ``run.json`` / ``metrics.json``, a checkpoint's ``*.state.json`` and
``latest.json``, an ablation cell's ``result.json``) is read through
:func:`read_json` or :func:`parse_json`: the text is size-capped, parsed, and
validated against the JSON Schema of its kind (:data:`SCHEMAS`) before any
field is used. Anything wrong (bad JSON, wrong types, missing keys, unknown
format versions, absurd sizes) is one :class:`~attnviz.errors.FileFormatError`
naming the file and the field, never a ``KeyError`` deep inside a reader.

:func:`contained` resolves a file name found *inside* a file (a checkpoint's
weights file, ``latest.json``'s target) and refuses anything that leaves its
folder (``../``, absolute paths, symlinks out).

This module imports only :mod:`attnviz.errors`: every layer may use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import FileFormatError

__all__ = [
    "MAX_JSON_BYTES",
    "SCHEMAS",
    "contained",
    "parse_json",
    "read_json",
    "validate",
]

#: Largest JSON text attnviz reads from a file (metadata, state, results). Real files are
#: well under 1 MB (a checkpoint state with RNG states is ~40 KB); more is not an attnviz file.
MAX_JSON_BYTES = 16 << 20

_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# module paths and value names: dot-separated parts of letters, digits, _ and - (Sequential
# children are named "0", "1", ...; torchvision's RegNet has "block4-5"); no quote, backslash,
# space or newline can reach generated code
_PART = r"[A-Za-z0-9_\-]+"
_DOTTED = rf"^{_PART}(\.{_PART})*$"
_DOTTED_OR_EMPTY = rf"^$|^{_PART}(\.{_PART})*$"
_FILE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
_INT = {"type": "integer"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_DIM = {"type": "integer", "minimum": 0, "maximum": 1 << 16}

_BASE_REF = {
    "type": ["object", "null"],
    "required": ["ref"],
    "properties": {
        "ref": {"type": "string", "minLength": 3, "maxLength": 300},
        "kwargs": {"type": "object", "maxProperties": 256},
    },
    "additionalProperties": False,
}

_SITE_V1_PROPERTIES = {
    # names that reach generated code: dotted Python identifiers (module paths and values)
    "site": {"type": "string", "pattern": _DOTTED, "maxLength": 512},
    "owner": {"type": "string", "pattern": _DOTTED_OR_EMPTY, "maxLength": 512},
    "local": {"type": "string", "pattern": _DOTTED_OR_EMPTY, "maxLength": 512},
    "attr": {"type": "string", "pattern": rf"^{_PART}$", "maxLength": 128},
    "channels": {"type": "integer", "minimum": 1, "maximum": 1 << 16},
    "shape": {"type": "array", "items": _DIM, "maxItems": 8},
}

_SITE_V1 = {
    "type": "object",
    "required": ["site", "owner", "local", "attr", "channels"],
    "properties": _SITE_V1_PROPERTIES,
    "additionalProperties": False,
}

#: ``attnviz.surgery/2`` adds, per site, the input shape of a ``parallel`` or ``replace``
#: site and the ``state_dict`` keys a ``replace`` removed.
_SITE_V2 = {
    **_SITE_V1,
    "properties": {
        **_SITE_V1_PROPERTIES,
        "in_shape": {"type": "array", "items": _DIM, "minItems": 4, "maxItems": 4},
        "replaced": {
            "type": "array",
            "items": {"type": "string", "pattern": _DOTTED, "maxLength": 512},
            "maxItems": 10_000,
        },
    },
}

_INSERTION_V1_PROPERTIES = {
    "attention": {"type": "string", "pattern": _NAME, "maxLength": 128},
    "init": {"enum": ["default", "identity"]},
    "kwargs": {"type": "object", "maxProperties": 64},
    "where": {},
    "example_input_shape": {
        "type": ["array", "null"],
        "items": {"type": "integer", "minimum": 0, "maximum": 1 << 16},
        "maxItems": 8,
    },
    "sites": {"type": "array", "items": _SITE_V1, "minItems": 1, "maxItems": 10_000},
}

_INSERTION_V1 = {
    "type": "object",
    "required": ["attention", "init", "sites"],
    "properties": _INSERTION_V1_PROPERTIES,
    "additionalProperties": False,
}

#: ``attnviz.surgery/2`` adds the placement of each insertion.
_INSERTION_V2 = {
    **_INSERTION_V1,
    "properties": {
        **_INSERTION_V1_PROPERTIES,
        "placement": {"enum": ["after", "parallel", "replace"]},
        "sites": {"type": "array", "items": _SITE_V2, "minItems": 1, "maxItems": 10_000},
    },
}

_SPEC_FORMATS = ["attnviz.surgery/1", "attnviz.surgery/2"]

#: The surgery spec (``attnviz.surgery_spec``), stored in a saved model's safetensors metadata.
#: Format ``/1`` (attnviz 0.1: blocks after their sites) and ``/2`` (placements) are both read;
#: a ``/1`` spec must hold only what ``/1`` can say.
SURGERY_SPEC = {
    "type": "object",
    "required": ["format", "insertions"],
    "properties": {
        "format": {"enum": _SPEC_FORMATS},
        "attnviz_version": {"type": "string", "maxLength": 64},
        "base": _BASE_REF,
        "insertions": {"type": "array", "items": _INSERTION_V2, "maxItems": 64},
        "extra": {"type": ["object", "null"]},
    },
    "additionalProperties": False,
    "if": {"properties": {"format": {"const": _SPEC_FORMATS[0]}}},
    "then": {"properties": {"insertions": {"items": _INSERTION_V1}}},
}

#: ``checkpoints/latest.json``: which epoch's checkpoint is the newest complete one.
CHECKPOINT_POINTER = {
    "type": "object",
    "required": ["epoch"],
    "properties": {
        "epoch": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
        "state": {"type": "string", "pattern": _FILE_NAME, "maxLength": 128},
    },
    "additionalProperties": False,
}

_FILE_ENTRY = {
    "type": "object",
    "required": ["name", "sha256"],
    "properties": {
        "name": {"type": "string", "pattern": _FILE_NAME, "maxLength": 128},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
    "additionalProperties": False,
}

_EPOCH_ROW = {
    "type": "object",
    "required": ["epoch", "val_acc"],
    "properties": {"epoch": {"type": "integer", "minimum": 1}, "val_acc": {"type": "number"}},
}

_METRICS = {
    "type": "object",
    "required": ["epochs"],
    "properties": {"epochs": {"type": "array", "items": _EPOCH_ROW, "maxItems": 10_000_000}},
}

#: ``checkpoints/epoch-NNNN.state.json``: everything of a checkpoint but its tensors.
CHECKPOINT_STATE = {
    "type": "object",
    "required": ["format", "epoch", "optimizer", "rng", "files"],
    "properties": {
        "format": {"const": 1},
        "epoch": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
        "global_step": {"type": "integer", "minimum": 0},
        "optimizer": {
            "type": "object",
            "required": ["param_groups"],
            "properties": {
                "param_groups": {"type": "array", "items": {"type": "object"}, "maxItems": 10_000},
                "scalars": {"type": "object"},
            },
        },
        "rng": {
            "type": "object",
            "required": ["python", "numpy", "torch"],
            "properties": {
                "python": {"type": "array", "minItems": 3, "maxItems": 3},
                "numpy": {"type": "array", "minItems": 5, "maxItems": 5},
                "torch": {"type": "string"},
                "cuda": {"type": "array", "items": {"type": "string"}},
            },
        },
        "files": {
            "type": "object",
            "required": ["weights", "optimizer"],
            "properties": {"weights": _FILE_ENTRY, "optimizer": _FILE_ENTRY},
            "additionalProperties": False,
        },
        "scheduler": {"type": ["object", "null"]},
        "scaler": {"type": ["object", "null"]},
        "metrics": _METRICS,
        "settings": {"type": "object"},
        "identity": {"type": "object"},
        "recipe": {"type": "object"},
        "surgery": {"type": "object"},
    },
}

#: ``run.json``: what a training run is and whether it finished.
RUN_RECORD = {
    "type": "object",
    "required": ["identity", "finished"],
    "properties": {
        "identity": {
            "type": "object",
            "required": ["recipe", "settings", "data", "seed", "finetune"],
            "properties": {
                "recipe": {"type": "object"},
                "settings": {"type": "object"},
                "data": {"type": "string"},
                "seed": {"type": "integer"},
                "finetune": {"type": "string"},
            },
        },
        "finished": {"type": "boolean"},
        "epochs": {"type": "integer", "minimum": 1},
        "recipe_name": {"type": "string"},
        "settings": {"type": "object"},
        "world_size": {"type": "integer", "minimum": 1},
        "device": {"type": "string"},
    },
}

#: ``metrics.json`` of a run folder.
RUN_METRICS = _METRICS

#: ``cells/<id>/result.json`` of an ablation: the cell and its evaluated metrics.
CELL_RESULT = {
    "type": "object",
    "required": ["id", "setting", "recipe", "attention", "seed", "metrics"],
    "properties": {
        "id": {"type": "string", "pattern": _FILE_NAME, "maxLength": 256},
        "setting": {"type": "string", "maxLength": 1024},
        "recipe": {"type": "string", "maxLength": 4096},
        "attention": {"type": "string", "maxLength": 128},
        "where": {},
        "block_kwargs": {"type": "object"},
        "seed": {"type": "integer"},
        "metrics": {
            "type": "object",
            "additionalProperties": _NUM_OR_NULL,
            "maxProperties": 1024,
        },
    },
}

#: Every kind of file, by the name used in error messages and :func:`read_json`.
SCHEMAS: dict[str, Mapping[str, Any]] = {
    "surgery spec": SURGERY_SPEC,
    "checkpoint pointer": CHECKPOINT_POINTER,
    "checkpoint state": CHECKPOINT_STATE,
    "run record": RUN_RECORD,
    "run metrics": RUN_METRICS,
    "ablation cell result": CELL_RESULT,
}

_VALIDATORS: dict[str, Any] = {}


def _validator(kind: str) -> Any:
    if kind not in _VALIDATORS:
        from jsonschema import Draft202012Validator

        _VALIDATORS[kind] = Draft202012Validator(SCHEMAS[kind])
    return _VALIDATORS[kind]


def _field(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate(data: Any, kind: str, source: str | os.PathLike[str]) -> Any:
    """Check ``data`` against the schema of ``kind``; returns it, or raises naming file and field."""
    from jsonschema.exceptions import best_match

    try:
        error = best_match(_validator(kind).iter_errors(data))
    except RecursionError:
        raise FileFormatError(f"{source}: not a valid {kind}: nested too deeply") from None
    if error is not None:
        message = error.message
        if error.validator == "pattern":
            message = (
                f"{error.instance!r} is not a valid name here (letters, digits, _, - and dots)"
            )
        message = message if len(message) <= 200 else message[:200] + "..."
        raise FileFormatError(
            f"{source}: not a valid {kind}: field {_field(error.absolute_path)}: {message}"
        )
    return data


def parse_json(text: str | bytes, kind: str, source: str | os.PathLike[str]) -> Any:
    """Parse JSON text read from ``source`` and validate it as ``kind`` (see :func:`validate`)."""
    if len(text) > MAX_JSON_BYTES:
        raise FileFormatError(
            f"{source}: not a valid {kind}: {len(text):,} bytes of JSON, more than the "
            f"{MAX_JSON_BYTES:,} an attnviz file ever holds"
        )
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{source}: not a valid {kind}: not JSON ({exc})") from None
    except RecursionError:
        raise FileFormatError(f"{source}: not a valid {kind}: nested too deeply") from None
    return validate(data, kind, source)


def read_json(path: str | os.PathLike[str], kind: str) -> Any:
    """Read, size-check, parse and validate the JSON file ``path`` as ``kind``.

    A missing file is ``FileNotFoundError``; everything else wrong is
    :class:`~attnviz.errors.FileFormatError` naming the file and the field.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            return parse_json(b" " * (MAX_JSON_BYTES + 1), kind, path)  # raises, naming the size
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{kind} not found: {path}") from None
    except OSError as exc:
        raise FileFormatError(f"{path}: unreadable {kind} ({exc.strerror or exc})") from None
    return parse_json(raw, kind, path)


def contained(folder: str | os.PathLike[str], name: str, *, source: str | os.PathLike[str]) -> Path:
    """``folder / name`` for a file name read from ``source``, refusing anything outside ``folder``.

    ``name`` must be a plain file name (no separators, not ``..``), and the
    resolved path (symlinks followed) must stay inside the resolved folder.
    """
    folder = Path(folder)
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
    ):
        raise FileFormatError(f"{source}: {name!r} is not a plain file name inside {folder}")
    path = folder / name
    root = folder.resolve()
    target = path.resolve()
    if target != root and root not in target.parents:
        raise FileFormatError(
            f"{source}: {name!r} points outside {folder} (to {target}); refusing to read it"
        )
    return path
