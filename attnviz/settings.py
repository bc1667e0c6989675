"""Training settings: the recipe's ``train:`` mapping, validated, with defaults.

Every key has a type, a default and a range; an unknown key or a bad value
raises :class:`TrainError` naming the key, the value and the valid choices, so
a typo in a recipe or in ``--set`` fails before anything runs or is written.

The defaults are the tuned demo schedule of :data:`attnviz.data.DEMO_TRAINING`
(SGD, lr 0.1, Nesterov momentum 0.9, weight decay 5e-4, batch 64, 10 epochs),
except the learning-rate schedule: timm has no OneCycle, so the closest timm
schedule stands in for it, a per-step cosine decay after a half-epoch linear
warm-up from ``lr / 25`` (OneCycle's starting value, ``warmup_lr: null``).

``batch_size`` is the **global** batch: under ``torchrun`` with N processes
each process takes ``batch_size / N`` images per step, so a recipe means the
same optimisation whatever the number of processes.

>>> s = settings_from_dict({"epochs": 2}, overrides={"lr": 0.05})
>>> s.epochs, s.lr, s.opt
(2, 0.05, 'sgd')
>>> settings_from_dict({"epoch": 2})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
attnviz.errors.TrainError: train: unknown key 'epoch'; valid keys, closest first: ['epochs', ...]
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

from .errors import TrainError

__all__ = [
    "AMP_MODES",
    "FINETUNE_MODES",
    "FLIP_MODES",
    "MAX_EPOCHS",
    "RECIPE_MAPPINGS",
    "SCHEDULERS",
    "TrainError",
    "TrainSettings",
    "apply_dotted",
    "parse_set",
    "settings_from_dict",
]

#: Upper bound on ``epochs``: more is almost surely a typo (and would run for days).
MAX_EPOCHS = 10_000
#: timm scheduler names accepted by ``sched`` (``timm.scheduler.create_scheduler_v2``).
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "constant", "wsd", "rsqrt", "none")
FLIP_MODES = ("none", "horizontal", "vertical", "both")
AMP_MODES = ("none", "bf16", "fp16")
#: Which parameters train: everything, only the attention blocks, or the blocks and the classifier.
FINETUNE_MODES = ("all", "attention", "attention+head")
#: Recipe mappings that an override reaches with a dotted key: ``base_kwargs.num_classes=3``.
RECIPE_MAPPINGS = ("base_kwargs", "block_kwargs")
#: ``train:`` keys whose values are mappings, reached the same way: ``opt_kwargs.eps=1e-6``.
_MAPPING_KEYS = ("opt_kwargs",)


@dataclass
class TrainSettings:
    """All ``train:`` keys of a recipe, with their defaults (see the module docs)."""

    # schedule length and batch
    epochs: int = 10
    batch_size: int = 64  # global: per process it is batch_size / world size
    # data
    train_images: int | None = None  # None: synthetic 6000, a folder all of it
    val_images: int | None = None  # None: synthetic 1000, a folder all of it
    image_size: int | None = None  # None: the recipe's input_size, else 64
    data_seed: int = 0  # the synthetic images / folder subset; fixed across training seeds
    cache: bool | None = None  # keep decoded images in memory; None: yes for synthetic data
    workers: int = 0  # DataLoader worker processes (uncached data; decoding a cache)
    skip_bad_images: bool = False  # image folders: skip unreadable files with a warning
    flip: str = "horizontal"  # random flips of each training image: none/horizontal/vertical/both
    # optimiser (timm.optim.create_optimizer_v2)
    opt: str = "sgd"  # timm name: sgd (Nesterov), momentum, adamw, lamb, ...
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    filter_bias_and_bn: bool = True  # no weight decay on biases and norm weights
    opt_kwargs: dict[str, Any] = field(default_factory=dict)  # more keyword arguments to timm
    # schedule (timm.scheduler.create_scheduler_v2)
    sched: str = "cosine"
    sched_on_updates: bool = True  # step the schedule every batch (else every epoch)
    warmup_epochs: float = 0.5
    warmup_lr: float | None = None  # None: lr / 25 (where OneCycle starts)
    min_lr: float = 0.0
    decay_epochs: float | None = None  # step / wsd / rsqrt
    decay_milestones: list[int] = field(default_factory=lambda: [30, 60])  # multistep
    decay_rate: float = 0.1  # step / multistep; the power for poly
    cooldown_epochs: int = 0
    # loss and numerics
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max global gradient norm
    amp: str = "none"  # autocast dtype: none, bf16 (CPU or CUDA), fp16 (CUDA, with GradScaler)
    channels_last: bool = True
    threads: int | None = None  # torch.set_num_threads per process; None: leave as is
    # bookkeeping
    visualize_every: int = 5  # TensorBoard feature maps and CAMs every N epochs (0: never)
    keep_checkpoints: int = 3  # per-epoch checkpoints kept (>= 2, so a bad last one has a fallback)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        """Every valid ``train:`` key, in declaration order."""
        return [f.name for f in fields(cls)]

    def result_dict(self) -> dict[str, Any]:
        """The settings that change what training computes (not speed or logging)."""
        return {k: v for k, v in self.to_dict().items() if k not in _NOT_RESULT}


#: Keys that change how fast or how visibly a run goes, never its weights.
_NOT_RESULT = frozenset({"workers", "threads", "visualize_every", "keep_checkpoints", "cache"})

_KEYS = [f.name for f in fields(TrainSettings)]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _int(lo: int, hi: int | None = None, *, none: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None and none:
            return None
        ok = _is_int(v) and v >= lo and (hi is None or v <= hi)
        if ok:
            return None
        span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        return f"an int {span}" + (" or null" if none else "")

    return check


def _num(lo: float, hi: float | None = None, *, lo_open: bool = False, none: bool = False):
    def check(v: Any) -> str | None:
        if v is None and none:
            return None
        ok = _is_num(v) and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
        if ok:
            return None
        span = f"{'>' if lo_open else '>='} {lo}" + ("" if hi is None else f" and <= {hi}")
        return f"a number {span}" + (" or null" if none else "")

    return check


def _choice(choices: Iterable[str]) -> Callable[[Any], str | None]:
    choices = tuple(choices)

    def check(v: Any) -> str | None:
        return None if v in choices else f"one of {list(choices)}"

    return check


def _bool(*, none: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or (v is None and none):
            return None
        return "true or false" + (" or null" if none else "")

    return check


def _name(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string (a timm optimizer)"


def _mapping(v: Any) -> str | None:
    return None if isinstance(v, dict) and all(isinstance(k, str) for k in v) else "a mapping"


def _int_list(v: Any) -> str | None:
    ok = isinstance(v, list) and all(_is_int(x) and x >= 0 for x in v)
    return None if ok else "a list of ints >= 0"


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "epochs": _int(1, MAX_EPOCHS),
    "batch_size": _int(1, 1 << 20),
    "train_images": _int(1, none=True),
    "val_images": _int(1, none=True),
    "image_size": _int(8, 4096, none=True),
    "data_seed": _int(0),
    "cache": _bool(none=True),
    "workers": _int(0, 256),
    "skip_bad_images": _bool(),
    "flip": _choice(FLIP_MODES),
    "opt": _name,
    "lr": _num(0.0, 100.0, lo_open=True),
    "momentum": _num(0.0, 1.0),
    "weight_decay": _num(0.0),
    "filter_bias_and_bn": _bool(),
    "opt_kwargs": _mapping,
    "sched": _choice(SCHEDULERS),
    "sched_on_updates": _bool(),
    "warmup_epochs": _num(0.0),
    "warmup_lr": _num(0.0, none=True),
    "min_lr": _num(0.0),
    "decay_epochs": _num(0.0, lo_open=True, none=True),
    "decay_milestones": _int_list,
    "decay_rate": _num(0.0),
    "cooldown_epochs": _int(0),
    "label_smoothing": _num(0.0, 1.0),
    "grad_clip": _num(0.0, lo_open=True, none=True),
    "amp": _choice(AMP_MODES),
    "channels_last": _bool(),
    "threads": _int(1, 1024, none=True),
    "visualize_every": _int(0),
    "keep_checkpoints": _int(2, 1000),
}
assert set(_CHECKS) == set(_KEYS), set(_CHECKS) ^ set(_KEYS)


def _unknown_key(key: Any, source: str) -> TrainError:
    near = difflib.get_close_matches(str(key), _KEYS, n=4, cutoff=0.0)
    return TrainError(f"{source}: unknown key {key!r}; valid keys, closest first: {near}")


def _dotted(key: Any, heads: Iterable[str]) -> bool:
    """Whether ``key`` is ``HEAD.name[.name...]`` for one of ``heads``, with no empty part."""
    if not isinstance(key, str) or "." not in key:
        return False
    head, _, rest = key.partition(".")
    return head in heads and all(part.strip() for part in rest.split("."))


def _unknown_dotted(key: str, source: str, heads: Iterable[str]) -> TrainError:
    heads = list(heads)
    near = difflib.get_close_matches(key.partition(".")[0], heads, n=len(heads), cutoff=0.0)
    return TrainError(
        f"{source}: unknown key {key!r}; dotted keys start with one of, closest first: {near}"
    )


def apply_dotted(mapping: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``mapping`` with each ``"a.b.c": v`` of ``overrides`` set at ``[a][b][c]``.

    Missing or non-mapping levels on the way become mappings; the input is not modified.

    >>> apply_dotted({"base_kwargs": {"num_classes": 10, "widths": [8]}},
    ...              {"base_kwargs.num_classes": 3, "block_kwargs.rd_ratio": 0.25})
    {'base_kwargs': {'num_classes': 3, 'widths': [8]}, 'block_kwargs': {'rd_ratio': 0.25}}
    """
    out = dict(mapping)
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        level = out
        for part in path:
            inner = level.get(part)
            level[part] = dict(inner) if isinstance(inner, Mapping) else {}
            level = level[part]
        level[leaf] = value
    return out


def _validate(values: Mapping[str, Any], source: str, *, dotted: bool = False) -> None:
    if not isinstance(values, Mapping):
        raise TrainError(f"{source} must be a mapping of settings, got {type(values).__name__}")
    for key, value in values.items():
        if dotted and _dotted(key, _MAPPING_KEYS):
            continue  # checked with the mapping it lands in
        if dotted and isinstance(key, str) and "." in key:
            raise _unknown_dotted(key, source, _MAPPING_KEYS)
        if key not in _CHECKS:
            raise _unknown_key(key, source)
        expected = _CHECKS[key](value)
        if expected is not None:
            hint = ""
            if isinstance(value, str) and _float_or_none(value) is not None:
                hint = f" (text: YAML reads {value} as a string; write it with a dot, e.g. 1.0e-3)"
            raise TrainError(f"{source}: {key} must be {expected}, got {value!r}{hint}")


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def settings_from_dict(
    values: Mapping[str, Any] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    source: str = "train",
    overrides_source: str = "overrides",
) -> TrainSettings:
    """Validated settings: defaults, then ``values`` (a recipe's ``train:``), then ``overrides``.

    An override may reach into a mapping-valued key with a dotted key
    (``{"opt_kwargs.eps": 1e-6}``), keeping the mapping's other entries.
    """
    values = {} if values is None else values
    overrides = {} if overrides is None else overrides
    _validate(values, source)
    _validate(overrides, overrides_source, dotted=True)
    dotted = {k: v for k, v in overrides.items() if "." in k}
    merged = {**values, **{k: v for k, v in overrides.items() if "." not in k}}
    if dotted:
        merged = apply_dotted({**merged, "opt_kwargs": merged.get("opt_kwargs") or {}}, dotted)
        _validate({k: merged[k] for k in _MAPPING_KEYS}, overrides_source)
    if merged.get("sched") in ("wsd", "rsqrt") and merged.get("decay_epochs") is None:
        merged["decay_epochs"] = 0.2
    settings = TrainSettings(**merged)
    settings.opt_kwargs = dict(settings.opt_kwargs)
    settings.decay_milestones = list(settings.decay_milestones)
    return settings


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.05", "flip=both"]`` -> ``{"lr": 0.05, "flip": "both"}``; values are YAML.

    A key is a ``train:`` key (also written ``train.lr``), or a dotted key into
    a recipe mapping (``base_kwargs.num_classes``, ``block_kwargs.rd_ratio``) or
    into ``opt_kwargs`` (``opt_kwargs.eps``); dotted keys stay dotted in the
    result, for :func:`~attnviz.training.train`'s ``overrides``. Unknown keys
    raise :class:`TrainError` with the closest valid ones; values are checked
    where they are used.

    >>> parse_set(["lr=0.05", "train_images=512", "grad_clip=null"])
    {'lr': 0.05, 'train_images': 512, 'grad_clip': None}
    >>> parse_set(["base_kwargs.num_classes=3", "train.flip=none"])
    {'base_kwargs.num_classes': 3, 'flip': 'none'}
    """
    out: dict[str, Any] = {}
    heads = (*RECIPE_MAPPINGS, *_MAPPING_KEYS)
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TrainError(f"--set expects key=value, got {item!r}")
        if key.startswith("train."):
            key = key[len("train.") :]
        if "." in key:
            if not _dotted(key, heads):
                raise _unknown_dotted(key, "--set", heads)
        elif key not in _CHECKS:
            raise _unknown_key(key, "--set")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise TrainError(f"--set {key}: cannot parse value {text!r}: {exc}") from None
        if isinstance(value, str) and _float_or_none(value) is not None:
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as text
        out[key] = value
    return out
