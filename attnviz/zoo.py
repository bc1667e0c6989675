"""Base models by reference (``torchvision:resnet50``, ``timm:resnet50``, ``pkg.mod:factory``).

A model built by :func:`create_model` remembers its reference, so a saved
modified model can be rebuilt from its JSON spec alone. Models built
elsewhere are recognised when possible (timm's ``pretrained_cfg``, or the
torchvision builder whose architecture matches parameter for parameter).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import pickle
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._utils import class_path
from .errors import AttnvizError, FileFormatError
from .inputs import InputContract, attach_contract, input_contract

__all__ = [
    "create_model",
    "meta_state_shapes",
    "read_state_dict",
    "recognize_base",
    "resolve_factory",
]

_REF_ATTR = "_attnviz_base"


def _split(ref: str) -> tuple[str, str]:
    if not isinstance(ref, str) or ":" not in ref:
        raise AttnvizError(
            f"model reference must look like 'torchvision:resnet18', 'timm:resnet50', "
            f"'attnviz:small_resnet' or 'package.module:factory', got {ref!r}"
        )
    source, name = ref.split(":", 1)
    return source, name


def resolve_factory(ref: str) -> Callable[..., nn.Module]:
    """The callable that builds ``ref`` (without weights)."""
    from ._select import unknown_name_error

    source, name = _split(ref)
    if source == "torchvision":
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        if name not in names:
            raise unknown_name_error("torchvision model", name, names)
        return torchvision.models.get_model_builder(name)
    if source == "timm":
        import timm

        names = timm.list_models()
        if name not in names:
            raise unknown_name_error("timm model", name, names)
        return lambda **kw: timm.create_model(name, **kw)
    if source == "attnviz":
        from . import nets

        factories = {
            n: getattr(nets, n) for n in getattr(nets, "__all__", []) if callable(getattr(nets, n))
        }
        if name not in factories:
            raise unknown_name_error("attnviz model", name, sorted(factories))
        return factories[name]
    try:
        module = importlib.import_module(source)
    except ImportError as exc:
        raise AttnvizError(
            f"cannot import module {source!r} for model reference {ref!r}: {exc}"
        ) from exc
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            from ._select import closest

            raise AttnvizError(f"{source!r} has no {name!r}; closest: {closest(part, dir(obj))}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise AttnvizError(f"{ref!r} is not callable")
    return obj


def create_model(
    ref: str,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a base model by reference and remember the reference.

    ``pretrained=True`` uses the library's own download (torchvision's
    default weights, timm's pretrained tag); ``weights`` loads a local file
    of the base model (safetensors, or a torch file read with
    ``weights_only=True``). With a ``num_classes`` other than the weights',
    everything but the classifier (the last ``nn.Linear``) is loaded and the
    classifier keeps its initialisation, with a warning: the usual start for
    fine-tuning ImageNet weights on another dataset (timm does the same itself).

    >>> m = create_model("torchvision:resnet18", num_classes=10)
    >>> recognize_base(m)
    {'ref': 'torchvision:resnet18', 'kwargs': {'num_classes': 10}}
    """
    source, name = _split(ref)
    factory = resolve_factory(ref)
    call_kwargs = dict(kwargs)
    state: Mapping[str, torch.Tensor] | None = None
    if weights is not None and source == "timm":
        # timm's own pretrained path, pointed at a local file (it adapts the classifier too:
        # it drops the file's classifier only when its class count differs). The file is read
        # by attnviz's own reader first, so it is known to hold nothing but tensors.
        read_state_dict(weights)
        overlay: dict[str, Any] = {"file": str(weights)}
        classes = _timm_file_classes(name, weights)
        if classes is not None:
            overlay["num_classes"] = classes
        call_kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
    elif weights is not None:
        state = read_state_dict(weights)
    elif pretrained:
        if source == "torchvision":
            state = _torchvision_weights_for_other_classes(name, kwargs)
            if state is None:
                call_kwargs["weights"] = "DEFAULT"
        elif source == "timm":
            call_kwargs["pretrained"] = True
        else:
            raise AttnvizError(
                f"pretrained=True is only available for torchvision and timm models, not {ref!r}"
            )
    model = factory(**call_kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{ref!r} returned {type(model).__name__}, not an nn.Module")
    if state is not None:
        _load_with_new_head(model, state, ref)
    _json_check(kwargs, ref)
    setattr(model, _REF_ATTR, {"ref": ref, "kwargs": dict(kwargs)})
    attach_contract(model, _contract(model, source, name, pretrained, weights))
    return model


def _contract(
    model: nn.Module, source: str, name: str, pretrained: bool, weights: str | Path | None
) -> InputContract:
    """What a model just built expects: its weights' own transforms and class names."""
    contract = input_contract(model)
    classes = _last_linear_out(model)
    if weights is not None:
        contract.weights = f"base weights from {weights}"
    elif not pretrained:
        contract.weights = "random initialisation"
    elif source == "torchvision":
        from torchvision.models import get_model_weights

        w = get_model_weights(name).DEFAULT
        t = w.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        names = list(w.meta.get("categories") or [])
        contract = replace(
            contract,
            size=(crop, crop),
            mean=tuple(t.mean),
            std=tuple(t.std),
            resize="crop",
            crop_pct=crop / resize,
            class_names=names if classes == len(names) else None,
            weights=f"torchvision {name} {w.name}",
            source=f"torchvision {name} {w.name} transforms()",
        )
    elif source == "timm":
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        names = None
        if classes == 1000 and cfg.get("num_classes", 1000) == 1000:
            from timm.data import ImageNetInfo

            info = ImageNetInfo()
            names = [info.index_to_description(i) for i in range(1000)]
        contract = replace(
            contract,
            resize="crop",
            class_names=names,
            weights=f"timm {name}" + (f".{cfg['tag']}" if cfg.get("tag") else ""),
        )
    return contract


def _torchvision_weights_for_other_classes(
    name: str, kwargs: Mapping[str, Any]
) -> dict[str, torch.Tensor] | None:
    """torchvision's default weights as a state_dict when ``num_classes`` differs from theirs.

    torchvision refuses ``weights=`` with another class count; attnviz builds the
    model with the asked-for head and loads the rest (see :func:`_load_with_new_head`).
    None when torchvision can load them itself.
    """
    from torchvision.models import get_model_weights

    classes = kwargs.get("num_classes")
    default = get_model_weights(name).DEFAULT
    if classes is None or classes == len(default.meta.get("categories") or []):
        return None
    return default.get_state_dict(progress=True, check_hash=True)


def _classifier_name(model: nn.Module) -> str | None:
    """The qualified name of the model's last ``nn.Linear`` (its classifier), or None."""
    name = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    return name


def _load_with_new_head(model: nn.Module, state: Mapping[str, torch.Tensor], ref: str) -> None:
    """Load a base model's weights; a classifier of another class count keeps its initialisation.

    Every other key must match in name and shape (a strict load). This is the
    usual way to fine-tune ImageNet weights on a dataset with fewer classes.
    """
    own = model.state_dict()
    head = _classifier_name(model)
    fresh = [
        k
        for k in (f"{head}.weight", f"{head}.bias")
        if head is not None
        and k in state
        and k in own
        and state[k].shape != own[k].shape
        and state[k].shape[1:] == own[k].shape[1:]
    ]
    if not fresh:
        _strict_load(model, state, ref)
        return
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if k not in fresh}, strict=False
    )
    if unexpected or sorted(missing) != sorted(fresh):
        _strict_load(model, state, ref)  # raises, naming the keys
    warnings.warn(
        f"{ref}: the weights' classifier {head!r} has {state[fresh[0]].shape[0]} outputs and the "
        f"model {own[fresh[0]].shape[0]}: it keeps its random initialisation (fine-tune it)",
        stacklevel=3,
    )


def _strict_load(model: nn.Module, state: Mapping[str, torch.Tensor], ref: str) -> None:
    """``load_state_dict(strict=True)``; a mismatch is one line naming the first keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        detail = []
        if missing:
            detail.append(f"{len(missing)} keys missing (e.g. {missing[:3]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            k = shapes[0]
            detail.append(
                f"{len(shapes)} of another shape (e.g. {k}: file {list(state[k].shape)}, "
                f"model {list(own[k].shape)})"
            )
        raise FileFormatError(
            f"the weights do not fit {ref}: {'; '.join(detail)} (are they another architecture's?)"
        )
    model.load_state_dict(state, strict=True)


def _timm_file_classes(name: str, path: str | Path) -> int | None:
    """The classifier size stored in a weights file of timm model ``name`` (None if unknown)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    classifier = getattr(cfg, "classifier", None) if cfg is not None else None
    if not classifier:
        return None
    weight = read_state_dict(path).get(f"{classifier}.weight")
    return int(weight.shape[0]) if weight is not None else None


def _json_check(kwargs: Mapping[str, Any], ref: str) -> None:
    try:
        json.dumps(kwargs)
    except TypeError as exc:
        raise TypeError(
            f"keyword arguments of {ref!r} must be JSON values to be recorded: {exc}"
        ) from exc


def _state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _last_linear_out(model: nn.Module) -> int | None:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m.out_features
    return last


@contextlib.contextmanager
def _no_init():
    """Skip weight initialisation (only shapes matter when matching architectures)."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def _build_meta(
    factory: Callable[..., nn.Module], kwargs: dict, devices: tuple[str, ...] = ("meta", "cpu")
) -> nn.Module | None:
    """Build without weights: on the meta device, or on the CPU for builders that compute with torch."""
    for device in devices:
        try:
            with torch.device(device), _no_init():
                return factory(**kwargs)
        except Exception:
            continue
    return None


def meta_state_shapes(ref: str, kwargs: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | None:
    """The ``state_dict`` shapes ``create_model(ref, **kwargs)`` would have, built on the meta
    device (no memory, no initialisation); None when the builder cannot run there."""
    built = _build_meta(resolve_factory(ref), dict(kwargs), devices=("meta",))
    return _state_shapes(built) if isinstance(built, nn.Module) else None


def recognize_base(
    model: nn.Module,
    *,
    cheap: bool = False,
    ignore_keys: Iterable[str] = (),
    cls: type | None = None,
    removed_keys: Iterable[str] = (),
) -> dict[str, Any] | None:
    """``{"ref": ..., "kwargs": ...}`` that rebuilds ``model``'s architecture, or None.

    Models from :func:`create_model` carry it; timm models are recognised from
    their config; torchvision models by finding the builder of their module
    whose parameters match in name and shape; other classes if calling them
    with no arguments gives the same parameters. ``ignore_keys`` (a modified
    model's attention keys) are left out of the match and ``cls`` is the class
    to recognise (a rewritten model's original class); ``removed_keys`` are keys
    of the base that the model no longer holds (modules a ``replace`` took out);
    :func:`attnviz.base_reference` fills all three. ``cheap=True`` only reads a
    recorded reference.
    """
    ref = getattr(model, _REF_ATTR, None)
    if ref is not None:
        return copy.deepcopy(ref)
    if cheap:
        return None
    skip = set(ignore_keys)
    removed = set(removed_keys)
    target = {k: v for k, v in _state_shapes(model).items() if k not in skip}
    num_classes = _last_linear_out(model)
    candidates: list[tuple[str, Callable[..., nn.Module], list[dict]]] = []
    cfg = getattr(model, "pretrained_cfg", None)
    cls = cls or type(model)
    module_name = getattr(cls, "__module__", "")
    if isinstance(cfg, dict) and cfg.get("architecture"):
        arch = cfg["architecture"]
        kw = [{"num_classes": getattr(model, "num_classes", num_classes)}]
        candidates.append((f"timm:{arch}", resolve_factory(f"timm:{arch}"), kw))
    elif module_name.startswith("torchvision.models"):
        import torchvision

        for name in torchvision.models.list_models(module=torchvision.models):
            builder = torchvision.models.get_model_builder(name)
            if builder.__module__ == module_name:
                kws = [{}] if num_classes in (None, 1000) else [{"num_classes": num_classes}, {}]
                candidates.append((f"torchvision:{name}", builder, kws))
    elif module_name == "attnviz.nets":
        return None
    else:
        candidates.append((class_path(cls), cls, [{}]))
    for ref_name, factory, kw_options in candidates:
        for kw in kw_options:
            built = _build_meta(factory, kw)
            shapes = _state_shapes(built) if built is not None else None
            if (
                shapes is not None
                and {k: v for k, v in shapes.items() if k not in removed} == target
            ):
                return {"ref": ref_name, "kwargs": kw}
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``. A dict holding ``state_dict`` or
    ``model`` (common checkpoint layouts) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors' own error types for a damaged file
            raise FileFormatError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise FileFormatError(
            f"{path} holds pickled Python objects besides tensors, which attnviz will not unpickle "
            "(unpickling runs code). If the file is yours, convert it once where you trust it: "
            "sd = torch.load(path, weights_only=False); safetensors.torch.save_file("
            "{k: v.contiguous() for k, v in sd.items()}, 'weights.safetensors'), and use that file"
        ) from None
    except Exception as exc:  # not a torch file at all, truncated, ...
        raise FileFormatError(
            f"cannot read weights from {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FileFormatError(f"{path} does not hold a state_dict of tensors (name -> tensor)")
    return obj
