"""Save and load modified models: safetensors weights plus the JSON surgery spec.

``save(model, "m.safetensors")`` writes the weights with the spec in the
file's metadata (and a readable copy beside it, ``m.json``); ``load`` builds
the base model from the spec's reference, replays the surgery, and loads the
weights strictly. Nothing is ever unpickled, and nothing in the file can make
attnviz import or call code: the spec is validated (:mod:`attnviz.fileformats`),
the base reference and every class it names must be allowlisted
(:mod:`attnviz.trust`; ``base=`` or ``trust_code=True`` for anything else), and
the architecture the spec describes is checked against the tensors the file
actually holds, on the meta device, before any real memory is allocated.

:func:`load_base_weights` loads a *base* model's weights into a modified model.

A model with ``replace`` placements is saved without the modules they
replaced (they are not part of the model): after :func:`load` those come back
from :func:`~attnviz.remove_attention` as the base builder initialises them,
until :func:`load_base_weights` fills them from the base model's file.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._atomic import atomic_write, atomic_write_json
from ._utils import eval_mode, model_device
from .errors import AttnvizError, FileFormatError
from .fileformats import MAX_JSON_BYTES, parse_json
from .inputs import attach_contract, attached_contract, contract_from_spec, spec_entry
from .surgery import (
    ReplacedWeightsWarning,
    SurgerySpec,
    apply_surgery,
    attention_keys,
    surgery_spec,
)
from .surgery.build import site_block
from .surgery.placements import kept_module, mark_initialised
from .surgery.spec import spec_of
from .trust import check_model_reference
from .zoo import create_model, meta_state_shapes, read_state_dict

__all__ = ["load", "load_base_weights", "load_weights", "read_spec", "save"]

_META_KEY = "attnviz_spec"


def save(model: nn.Module, path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights (safetensors) and surgery spec; returns the weights path.

    The write is atomic (temporary file, then rename): a crash never leaves
    a half-written file under ``path``. ``extra`` (JSON) is stored beside the
    spec, over what the model's spec already carries.

    >>> import torchvision, tempfile, os
    >>> from attnviz import insert_attention, load
    >>> m = insert_attention(torchvision.models.resnet18(num_classes=10), "eca", where="stages")
    >>> p = save(m, os.path.join(tempfile.mkdtemp(), "eca.safetensors"))
    >>> type(load(p)).__name__
    'ResNet'
    """
    from safetensors.torch import save_model

    path = Path(path)
    if path.suffix != ".safetensors":
        path = (
            path.with_suffix(path.suffix + ".safetensors")
            if path.suffix
            else path.with_suffix(".safetensors")
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = surgery_spec(model)
    contract = attached_contract(model)
    if contract is not None:  # the model's input contract travels with its weights
        spec["extra"] = {**(spec.get("extra") or {}), **spec_entry(contract)}
    if extra is not None:
        spec["extra"] = {**(spec.get("extra") or {}), **json.loads(json.dumps(extra))}
    text = json.dumps(spec)
    atomic_write(path, lambda tmp: save_model(model, tmp, metadata={_META_KEY: text}))
    atomic_write_json(path.with_suffix(".json"), spec, indent=2)
    return path


def _header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """The metadata and the tensor shapes of a safetensors file (its header only)."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise FileFormatError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})"
        ) from None
    return meta, shapes


def _spec(path: Path, meta: Mapping[str, str]) -> SurgerySpec:
    if _META_KEY not in meta:
        raise FileFormatError(
            f"{path} has no attnviz spec in its metadata: it is a plain weights file, not a model "
            "saved by attnviz.save; load it into a model you build with load_base_weights(model, "
            "path) or create_model(ref, weights=path), or pass base= to attnviz.load"
        )
    text = meta[_META_KEY]
    if len(text) > MAX_JSON_BYTES:
        raise FileFormatError(f"{path}: the attnviz metadata is {len(text):,} bytes: not a spec")
    return SurgerySpec.from_json(parse_json(text, "surgery spec", path), source=str(path))


def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The surgery spec stored in a file written by :func:`save`, validated, as JSON."""
    path = Path(path)
    meta, _ = _header(path)
    return _spec(path, meta).to_json()


def _check_architecture(
    path: Path, spec: SurgerySpec, file_shapes: Mapping[str, tuple[int, ...]]
) -> None:
    """The base and blocks the spec describes must hold exactly the file's tensors.

    Built on the meta device, so a spec claiming a billion channels costs nothing
    and fails here, before anything real is allocated.
    """
    assert spec.base is not None
    base = meta_state_shapes(spec.base["ref"], spec.base.get("kwargs") or {})
    expected: dict[str, tuple[int, ...]] = dict(base or {})
    unchecked: list[str] = []  # blocks whose kwargs name classes: checked when really built
    for ins in spec.insertions:
        for s in ins.sites:
            if ins.placement == "replace":  # the replaced module's tensors are not in the file
                expected = {k: v for k, v in expected.items() if not k.startswith(f"{s.path}.")}
            if "__callable__" in json.dumps(ins.kwargs):
                unchecked.append(f"{s.path}.")
                continue
            try:
                with torch.device("meta"):
                    block = site_block(ins.attention, s, ins.placement, ins.init, ins.kwargs)
            except Exception:  # an unregistered name or bad kwargs: apply_surgery says which
                unchecked.append(f"{s.path}.")
                continue
            expected.update(
                {f"{s.path}.{k}": tuple(v.shape) for k, v in block.state_dict().items()}
            )
    if base is None:  # a builder that cannot run on the meta device: check the blocks only
        expected = {k: v for k, v in expected.items() if k in file_shapes}
    wrong = [k for k, shape in expected.items() if file_shapes.get(k) != shape]
    extra = []
    if base is not None:
        skip = tuple(unchecked)
        extra = [k for k in file_shapes if k not in expected and not k.startswith(skip or ("\0",))]
    if wrong or extra:
        k = (wrong or extra)[0]
        raise FileFormatError(
            f"{path}: the spec describes a model that does not match the weights in the file "
            f"({len(wrong)} tensors differ, {len(extra)} unexpected; e.g. {k!r}: spec "
            f"{list(expected[k]) if k in expected else 'none'}, file "
            f"{list(file_shapes[k]) if k in file_shapes else 'none'})"
        )


def load(
    path: str | os.PathLike,
    *,
    base: nn.Module | Callable[[], nn.Module] | None = None,
    device: str | torch.device = "cpu",
    trust_code: bool = False,
) -> nn.Module:
    """Rebuild a model saved by :func:`save` and load its weights (strictly).

    The base architecture comes from the spec's reference, which a file may
    only give as ``torchvision:``, ``timm:`` or ``attnviz:``. For a model of
    your own pass ``base`` (a module, copied, or a callable returning one), or,
    if you trust whoever wrote the file, ``trust_code=True`` to let it name
    ``package.module:factory`` and classes outside the allowlist
    (:mod:`attnviz.trust`). A file that is not what it claims raises
    :class:`~attnviz.errors.FileFormatError`; one that names code,
    :class:`~attnviz.errors.UntrustedCodeError`. The model's input contract
    (:mod:`attnviz.inputs`: size, normalisation, resize policy, class names),
    recorded in the file, comes back with it.
    """
    from safetensors.torch import load_model

    path = Path(path)
    meta, file_shapes = _header(path)
    spec = _spec(path, meta)
    if base is not None:
        model = base() if callable(base) and not isinstance(base, nn.Module) else base
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"base must be an nn.Module or a callable returning one, got {type(model).__name__}"
            )
        if not spec.insertions:
            model = copy.deepcopy(model)
    elif spec.base is not None:
        ref, kwargs = spec.base["ref"], spec.base.get("kwargs") or {}
        check_model_reference(ref, kwargs, source=path, trust_code=trust_code)
        _check_architecture(path, spec, file_shapes)
        try:
            model = create_model(ref, **kwargs)
        except AttnvizError:
            raise
        except Exception as exc:  # the builder refused the file's kwargs, in its own words
            raise FileFormatError(
                f"{path}: the base model {ref} cannot be built with the file's kwargs "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from None
    else:
        raise FileFormatError(
            f"{path}: the spec does not say how to build the base model (it was not made by "
            "attnviz.create_model and not recognised); pass base= (the module or a factory)"
        )
    contract = contract_from_spec(spec.extra, str(path))  # validated before anything is built
    with warnings.catch_warnings():  # the file never held what a replace removed
        warnings.simplefilter("ignore", ReplacedWeightsWarning)
        model = apply_surgery(model, spec, source=str(path), trust_code=trust_code)
    if not isinstance(base, nn.Module):  # replaced modules hold a fresh build's weights
        mark_initialised(model, spec.replaced_sites())
    if contract is not None:
        attach_contract(model, contract)
    missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    if missing or unexpected:
        raise FileFormatError(
            f"{path} does not match the rebuilt model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    _check_runs(model.to(device), spec, path)
    return model


def _check_runs(model: nn.Module, spec: SurgerySpec, path: Path) -> None:
    """The rebuilt model must run on the example input its surgery recorded.

    A spec can place a block at a site of another width than the block's weights
    (the weights still load); that model would fail at its first forward. The check
    runs on the meta device (no compute, no memory); a model the meta device cannot
    run (data-dependent control flow) runs once for real instead.
    """
    shape = next((i.example_input_shape for i in spec.insertions if i.example_input_shape), None)
    if not shape:
        return
    tensors = dict(itertools.chain(model.named_parameters(), model.named_buffers()))
    with eval_mode(model), torch.no_grad():
        try:
            meta = {k: v.to("meta") for k, v in tensors.items()}
            torch.func.functional_call(model, meta, (torch.zeros(shape, device="meta"),))
            return
        except Exception:  # unsupported on meta, or a real mismatch: find out for real
            pass
        try:
            model(torch.zeros(shape, device=model_device(model)[0]))
        except Exception as exc:  # whatever the crafted spec broke: the file is at fault
            raise FileFormatError(
                f"{path}: the model its spec describes does not run on the recorded example input "
                f"{list(shape)} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            ) from None


def load_weights(
    model: nn.Module, path: str | os.PathLike, *, device: str | None = None
) -> nn.Module:
    """Load the weights of a file written by :func:`save` into ``model``, built the same way.

    For a model you rebuilt yourself (from the same recipe, say): nothing in the
    file is built or imported; its spec must record the same surgery (the same
    blocks at the same places) as ``model``'s, and every tensor must match
    (a strict load). Returns ``model``.
    """
    from safetensors.torch import load_model

    path = Path(path)
    meta, _ = _header(path)
    saved = _spec(path, meta)
    own = surgery_spec(model)
    here = [(i["attention"], [s["site"] for s in i["sites"]]) for i in own["insertions"]]
    there = [(i.attention, [s.site for s in i.sites]) for i in saved.insertions]
    if here != there:
        raise FileFormatError(
            f"{path} records another surgery than the model's: {there} in the file, {here} here"
        )
    missing, unexpected = load_model(model, str(path), strict=False, device=str(device or "cpu"))
    if missing or unexpected:
        raise FileFormatError(
            f"{path} does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    contract = contract_from_spec(saved.extra, str(path))  # what these weights expect
    if contract is not None:
        attach_contract(model, contract)
    return model if device is None else model.to(device)


def _replaced_tensors(model: nn.Module) -> dict[str, tuple[Any, str]]:
    """Base keys a ``replace`` took out of ``model``: ``key -> (kept module, its own key)``."""
    spec = spec_of(model)
    out: dict[str, tuple[Any, str]] = {}
    for s in spec.replaced_sites() if spec is not None else []:
        kept = kept_module(model.get_submodule(s.path))
        if kept is not None:
            out.update({f"{s.path}.{k}": (kept, k) for k in kept.module.state_dict()})
    return out


def load_base_weights(
    model: nn.Module, weights: str | Path | Mapping[str, torch.Tensor]
) -> list[str]:
    """Load a *base* model's weights into a model after attention surgery.

    Every key of the file must exist in the model with the same shape, and
    the only keys the file may lack are the attention blocks' own (those
    keep their initialisation). Keys of modules that a ``replace`` placement
    took out are accepted: they go into the modules kept aside for
    :func:`~attnviz.remove_attention`, and a :class:`ReplacedWeightsWarning`
    lists them. Returns the list of attention keys left as initialised.
    Raises naming the first offending keys otherwise.
    """
    state = read_state_dict(weights) if isinstance(weights, str | Path) else dict(weights)
    own = model.state_dict()
    replaced = _replaced_tensors(model)
    aside = {k: v for k, v in state.items() if k in replaced}
    state = {k: v for k, v in state.items() if k not in replaced}
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise FileFormatError(
            f"{len(unexpected)} key(s) of the weights are not in the model, e.g. {unexpected[:5]}"
        )
    shapes = {k: tuple(v.shape) for k, v in own.items()}
    for k in aside:
        kept, key = replaced[k]
        shapes[k] = tuple(kept.module.state_dict()[key].shape)
    bad_shape = [k for k, v in {**state, **aside}.items() if tuple(v.shape) != shapes[k]]
    if bad_shape:
        k = bad_shape[0]
        got = state.get(k, aside.get(k))
        raise AttnvizError(
            f"shape mismatch for {k}: weights {tuple(got.shape)} vs model {shapes[k]}"
        )
    attn = set(attention_keys(model))
    missing = [k for k in own if k not in state]
    not_attn = [k for k in missing if k not in attn]
    if not_attn:
        raise FileFormatError(
            f"the weights lack {len(not_attn)} non-attention key(s), e.g. {not_attn[:5]}"
        )
    model.load_state_dict(state, strict=False)
    if aside:
        by_module: dict[int, tuple[Any, dict[str, torch.Tensor]]] = {}
        for k, v in aside.items():
            kept, key = replaced[k]
            by_module.setdefault(id(kept), (kept, {}))[1][key] = v
        for kept, tensors in by_module.values():
            kept.module.load_state_dict(tensors, strict=False)
            if set(tensors) == set(kept.module.state_dict()):
                kept.origin = "base"
        shown = sorted(aside)
        warnings.warn(
            f"{len(shown)} key(s) of the weights belong to modules that placement='replace' took "
            f"out of the model ({', '.join(shown[:8])}{' ...' if len(shown) > 8 else ''}): they "
            "are kept with those modules for remove_attention, not used by the model",
            ReplacedWeightsWarning,
            stacklevel=2,
        )
    return missing
