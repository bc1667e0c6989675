"""Comparison figures for numbers: per-layer curves, gate distributions, excitation profiles,
bar charts, accuracy/cost trade-offs and forest plots of differences. Used by the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.transforms import Bbox

from ..errors import AttnvizError
from ._common import ArrayLike, PathArg, finish, get_cmap, grid_shape, new_figure, to_numpy

_MARKERS = "osD^vP*Xh<>p"


def _colors(n: int) -> list:
    cmap = get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _nonempty(mapping: object, arg: str, what: str) -> None:
    if not isinstance(mapping, Mapping) or not mapping:
        raise AttnvizError(f"{arg} must be a non-empty dict {what}")


def _ordered_union(dicts: Sequence[Mapping[str, object]]) -> list[str]:
    keys: dict[str, None] = {}
    for d in dicts:
        keys.update(dict.fromkeys(d))
    return list(keys)


def _as_scalar(v: object, arg: str) -> float:
    arr = to_numpy(v, arg)
    if arr.size != 1:
        raise AttnvizError(f"{arg} must be a single number, got shape {tuple(arr.shape)}")
    return float(arr.reshape(()))


def metric_curves(
    table: Mapping[str, Mapping[str, float]],
    metric: str,
    *,
    title: str | None = None,
    logy: bool = False,
    path: PathArg | None = None,
) -> Figure:
    """Per-layer curves of one metric, one line with markers per model.

    ``table`` is ``{model_name: {layer_name: value}}`` with layers in network order; a layer
    missing from a model leaves a gap in its line. ``metric`` labels the y axis.

    >>> fig = metric_curves({"resnet18": {"layer1": 0.9, "layer2": 0.7, "layer3": 0.5},
    ...                      "resnet18+SE": {"layer1": 0.92, "layer2": 0.8, "layer3": 0.6}},
    ...                     "linear CKA vs. baseline", path=None)
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['layer1', 'layer2', 'layer3']
    """
    _nonempty(table, "table", "{model_name: {layer_name: value}}")
    for name, row in table.items():
        _nonempty(row, f"table[{name!r}]", "{layer_name: value}")
    layers = _ordered_union(list(table.values()))
    longest = max(len(str(layer)) for layer in layers)
    fig = new_figure(max(5.5, 0.42 * len(layers) + 2.5), 3.6 + min(longest, 40) * 0.05)
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    for k, ((name, row), color) in enumerate(zip(table.items(), _colors(len(table)))):
        y = [
            _as_scalar(row[layer], f"table[{name!r}][{layer!r}]") if layer in row else np.nan
            for layer in layers
        ]
        ax.plot(
            x, y, marker=_MARKERS[k % len(_MARKERS)], markersize=5, linewidth=1.6,
            color=color, label=str(name),
        )  # fmt: skip
    ax.set_xticks(x, [str(layer) for layer in layers])
    rotate = len(layers) > 6 or longest > 8
    ax.tick_params(axis="x", labelrotation=45 if rotate else 0, labelsize=8)
    if rotate:
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(metric)
    ax.set_xlabel("layer")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title or f"{metric} per layer", fontsize=11)
    return finish(fig, path)


def gate_histograms(
    gates: Mapping[str, Mapping[str, ArrayLike]],
    *,
    bins: int = 50,
    ncols: int | None = None,
    title: str | None = None,
    path: PathArg | None = None,
) -> Figure:
    """Distribution of attention-gate values per layer: one subplot per layer (stage), one
    overlaid density histogram per model, x in [0, 1] with each model's mean dashed.

    ``gates`` is ``{model_name: {layer: values}}``; values of any shape are flattened and
    clipped to [0, 1] (sigmoid gates), or already binned as ``{"histogram": counts,
    "bin_edges": edges}`` (what :class:`attnviz.metrics.GateStats` computes). Layers
    missing from a model are simply not drawn.

    >>> import torch
    >>> fig = gate_histograms({"SE": {"layer1": torch.rand(1000), "layer2": torch.rand(1000)},
    ...                        "ECA": {"layer1": torch.rand(1000), "layer2": torch.rand(1000)}})
    >>> [ax.get_title() for ax in fig.axes]
    ['layer1', 'layer2']
    """
    _nonempty(gates, "gates", "{model_name: {layer: gate values}}")
    for name, row in gates.items():
        _nonempty(row, f"gates[{name!r}]", "{layer: gate values}")
    if bins < 1:
        raise AttnvizError(f"bins must be >= 1, got {bins}")
    layers = _ordered_union(list(gates.values()))
    rows, cols = grid_shape(len(layers), ncols if ncols else min(len(layers), 4))
    fig = new_figure(cols * 3.1 + 0.4, rows * 2.5 + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    edges = np.linspace(0.0, 1.0, bins + 1)
    colors = _colors(len(gates))
    for i, ax in enumerate(axes.flat):
        if i >= len(layers):
            ax.set_axis_off()
            continue
        layer = layers[i]
        for (name, row), color in zip(gates.items(), colors):
            if layer not in row:
                continue
            value = row[layer]
            if isinstance(value, Mapping) and "histogram" in value:
                # already binned (a streaming GateStats result): draw its density as stairs
                counts = to_numpy(value["histogram"], "histogram").reshape(-1).astype(float)
                bin_edges = to_numpy(value["bin_edges"], "bin_edges").reshape(-1).astype(float)
                if counts.sum() <= 0:
                    continue
                density = counts / counts.sum() / np.diff(bin_edges)
                ax.stairs(density, bin_edges, fill=True, alpha=0.35, color=color)
                ax.stairs(density, bin_edges, linewidth=1.2, color=color)
                mean = value.get(
                    "mean",
                    float((counts * (bin_edges[:-1] + bin_edges[1:]) / 2).sum() / counts.sum()),
                )
                ax.axvline(float(mean), color=color, linestyle="--", linewidth=1.0)
                continue
            vals = to_numpy(value, f"gates[{name!r}][{layer!r}]").reshape(-1)
            vals = np.clip(vals[np.isfinite(vals)], 0.0, 1.0)
            if vals.size == 0:
                continue
            ax.hist(vals, bins=edges, density=True, histtype="stepfilled", alpha=0.35, color=color)
            ax.hist(vals, bins=edges, density=True, histtype="step", linewidth=1.2, color=color)
            ax.axvline(float(vals.mean()), color=color, linestyle="--", linewidth=1.0)
        ax.set_xlim(0.0, 1.0)
        ax.set_title(str(layer), fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.25)
    for i, ax in enumerate(axes.flat[: len(layers)]):
        if i + cols >= len(layers):  # lowest subplot of its column
            ax.set_xlabel("gate value", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("density", fontsize=9)
    handles = [
        Patch(facecolor=c, edgecolor=c, alpha=0.6, label=str(n)) for n, c in zip(gates, colors)
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 6),
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(title or "attention gate values (dashed: mean)", fontsize=11)
    return finish(fig, path)


def gate_profiles(
    profiles: Mapping[str, ArrayLike],
    *,
    layer: str,
    max_classes: int = 10,
    title: str | None = None,
    path: PathArg | None = None,
) -> Figure:
    """Mean gate per channel for each class (the SE paper's excitation figure).

    ``profiles`` is ``{class_name: [C] mean gate per channel}``; the first ``max_classes``
    classes are drawn as thin lines and the mean over *all* classes as a thick black line.
    Similar lines mean the layer's attention is class-agnostic; spread means it is
    class-specific.

    >>> import torch
    >>> fig = gate_profiles({f"class {k}": torch.rand(64) for k in range(5)}, layer="layer4.1")
    >>> len(fig.axes[0].lines)  # five classes and the mean
    6
    """
    _nonempty(profiles, "profiles", "{class_name: mean gate per channel [C]}")
    if max_classes < 1:
        raise AttnvizError(f"max_classes must be >= 1, got {max_classes}")
    arrays = {}
    for name, p in profiles.items():
        arr = to_numpy(p, f"profiles[{name!r}]")
        if arr.ndim != 1:
            raise AttnvizError(f"profiles[{name!r}] must have shape [C], got {tuple(arr.shape)}")
        arrays[name] = arr
    lengths = {a.shape[0] for a in arrays.values()}
    if len(lengths) > 1:
        raise AttnvizError(
            f"profiles must all have the same number of channels, got {sorted(lengths)}"
        )
    stack = np.stack(list(arrays.values()))
    c = stack.shape[1]
    fig = new_figure(min(13.0, max(8.5, c / 40)), 3.8)
    ax = fig.add_subplot()
    x = np.arange(c)
    shown = list(arrays.items())[:max_classes]
    for (name, arr), color in zip(shown, _colors(len(shown))):
        ax.plot(x, arr, linewidth=0.9, alpha=0.8, color=color, label=str(name))
    ax.plot(
        x,
        np.nanmean(stack, axis=0),
        linewidth=2.6,
        color="black",
        label=f"mean of {len(arrays)} classes",
    )
    ax.set_xlim(-0.5, c - 0.5)
    lo, hi = float(np.nanmin(stack)), float(np.nanmax(stack))
    # scaled to the data: identity-initialised gates sit near 1.0 and would be a flat line on 0..1
    pad = max(hi - lo, 1e-3 * max(abs(hi), 1.0)) * 0.08
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("channel index")
    ax.set_ylabel("mean activation")
    ax.grid(True, alpha=0.25)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    ax.set_title(title or f"excitation per class — {layer}", fontsize=11)
    return finish(fig, path)


def bar_chart(
    values: Mapping[str, float | tuple[float, float]],
    *,
    ylabel: str,
    title: str | None = None,
    annotate: bool = True,
    zoom: bool = True,
    intervals: Mapping[str, tuple[float, float]] | None = None,
    path: PathArg | None = None,
) -> Figure:
    """Bars of ``{setting: (mean, std)}`` (or a bare mean) with ±std error bars, e.g. accuracy
    over seeds per attention type; each bar is labelled with its mean. ``intervals``
    ``{setting: (low, high)}`` draws those (asymmetric) error bars instead, e.g. confidence
    intervals. ``zoom`` starts the y axis near the smallest bar when all bars are close so the
    differences show; the bars then no longer start at zero (``zoom=False`` keeps zero, which
    keeps a small difference looking small).

    >>> fig = bar_chart({"none": (71.2, 0.3), "SE": (72.9, 0.2), "ECA": 72.6}, ylabel="top-1 %")
    >>> len(fig.axes[0].patches)
    3
    """
    _nonempty(values, "values", "{setting: (mean, std)}")
    means, stds = [], []
    for name, v in values.items():
        if isinstance(v, (tuple, list)):
            if len(v) != 2:
                raise AttnvizError(f"values[{name!r}] must be mean or (mean, std), got {v!r}")
            means.append(_as_scalar(v[0], f"values[{name!r}] mean"))
            stds.append(_as_scalar(v[1], f"values[{name!r}] std"))
        else:
            means.append(_as_scalar(v, f"values[{name!r}]"))
            stds.append(0.0)
    labels = [str(k) for k in values]
    err: Any = stds
    if intervals is not None:
        lows, highs = [], []
        for name, m in zip(values, means):
            lo_hi = intervals.get(name)
            lows.append(m - lo_hi[0] if lo_hi else 0.0)
            highs.append(lo_hi[1] - m if lo_hi else 0.0)
        err = [np.maximum(lows, 0.0), np.maximum(highs, 0.0)]
        stds = [max(a, b) for a, b in zip(*err)]
    longest = max(len(s) for s in labels)
    fig = new_figure(max(4.5, 0.7 * len(labels) + 2.0), 3.8 + min(longest, 30) * 0.04)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    bars = ax.bar(
        x, means, yerr=err, capsize=4, color=_colors(len(labels)), alpha=0.85,
        edgecolor="black", linewidth=0.6, error_kw={"linewidth": 1.0},
    )  # fmt: skip
    if annotate:
        ax.bar_label(bars, labels=[f"{m:.3g}" for m in means], padding=3, fontsize=8)
    ax.set_xticks(x, labels)
    if len(labels) > 5 or longest > 10:
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    lo = min(m - s for m, s in zip(means, stds))
    hi = max(m + s for m, s in zip(means, stds))
    if zoom and lo > 0 and (hi - lo) < 0.2 * hi:  # zoom in when bars differ by little
        span = hi - lo or abs(hi) * 0.05 or 1.0
        ax.set_ylim(lo - 0.6 * span, hi + 0.4 * span)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=11)
    return finish(fig, path)


def scatter_tradeoff(
    points: Mapping[str, tuple[float, float]],
    xlabel: str,
    ylabel: str,
    *,
    title: str | None = None,
    logx: bool = False,
    path: PathArg | None = None,
) -> Figure:
    """Scatter of ``{name: (x, y)}`` with each point labelled, e.g. accuracy against params
    or FLOPs for each attention variant.

    >>> fig = scatter_tradeoff({"resnet18": (11.7, 69.8), "+SE": (11.8, 71.0)},
    ...                        "params (M)", "top-1 %")
    >>> [t.get_text() for t in fig.axes[0].texts]
    ['resnet18', '+SE']
    """
    _nonempty(points, "points", "{name: (x, y)}")
    xs, ys = [], []
    for name, p in points.items():
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise AttnvizError(f"points[{name!r}] must be an (x, y) pair, got {p!r}")
        xs.append(_as_scalar(p[0], f"points[{name!r}] x"))
        ys.append(_as_scalar(p[1], f"points[{name!r}] y"))
    fig = new_figure(6.0, 4.4)
    ax = fig.add_subplot()
    colors = _colors(len(xs))
    ax.scatter(xs, ys, s=45, c=colors, edgecolors="black", linewidths=0.6, zorder=3)
    if logx:
        ax.set_xscale("log")
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=11)
    _label_points(ax, [str(k) for k in points], xs, ys)
    return finish(fig, path)


# (dx, dy) in points and alignment of a label around its marker, in order of preference
_LABEL_SPOTS = [
    ((5, 3), "left", "bottom"),
    ((5, -3), "left", "top"),
    ((-5, 3), "right", "bottom"),
    ((-5, -3), "right", "top"),
    ((0, 7), "center", "bottom"),
    ((0, -7), "center", "top"),
    ((6, 0), "left", "center"),
    ((-6, 0), "right", "center"),
    ((5, 12), "left", "bottom"),
    ((5, -12), "left", "top"),
]


def _label_points(ax: Axes, names: list[str], xs: list[float], ys: list[float]) -> None:
    """Label each marker, trying a few spots around it so labels do not overlap each other
    or other markers (greedy; dense clusters may still touch)."""
    fig = ax.get_figure()
    fig.draw_without_rendering()  # settle the layout so display positions are final
    renderer = fig.canvas.get_renderer()
    centres = ax.transData.transform(np.column_stack([xs, ys]))
    r = 4.0 * fig.dpi / 72  # marker radius, pixels
    markers = [(cx - r, cy - r, cx + r, cy + r) for cx, cy in centres]
    labels: list[tuple[float, float, float, float]] = []

    def free(b: Bbox, own: int) -> bool:
        others = [m for j, m in enumerate(markers) if j != own] + labels
        return all(b.x1 < t[0] or b.x0 > t[2] or b.y1 < t[1] or b.y0 > t[3] for t in others)

    for i, (name, x, y) in enumerate(zip(names, xs, ys)):
        for k, (offset, ha, va) in enumerate(_LABEL_SPOTS):
            ann = ax.annotate(
                name, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va,
                fontsize=8,
            )  # fmt: skip
            box = ann.get_window_extent(renderer)
            if free(box, i) or k == len(_LABEL_SPOTS) - 1:
                labels.append((box.x0, box.y0, box.x1, box.y1))
                break
            ann.remove()


def forest_plot(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str | None = None,
    path: PathArg | None = None,
) -> Figure:
    """Differences with their intervals: one panel per metric, one row per variant.

    ``rows``: ``{"metric": panel title, "model": row label, "delta", "ci_low", "ci_high",
    "significant", "better" ("higher"/"lower", optional)}``. Each difference is a marker
    with its interval as a bar, filled when significant, around a dashed zero line; the
    panel title says which sign is an improvement.

    >>> fig = forest_plot([{"metric": "accuracy", "model": "se", "delta": 0.01,
    ...                     "ci_low": -0.01, "ci_high": 0.03, "significant": False}])
    >>> len(fig.axes)
    1
    """
    if not rows:
        raise AttnvizError("forest_plot: no rows to draw")
    metrics = list(dict.fromkeys(str(r["metric"]) for r in rows))
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    ncols = min(len(metrics), 2)
    nrows = -(-len(metrics) // ncols)
    fig = new_figure(4.6 * ncols, (0.45 * len(models) + 0.9) * nrows + 0.4)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colors = dict(zip(models, _colors(len(models))))
    for ax, metric in zip(axes, metrics):
        mine = [r for r in rows if str(r["metric"]) == metric]
        for y, r in enumerate(mine):
            d = r.get("delta")
            if d is None:
                continue
            lo, hi = r.get("ci_low"), r.get("ci_high")
            color = colors[str(r["model"])]
            if lo is not None and hi is not None:
                ax.plot([lo, hi], [y, y], color=color, linewidth=2.0, solid_capstyle="butt")
            ax.plot(
                [d], [y], marker="o", markersize=7, color=color,
                markerfacecolor=color if r.get("significant") else "white", markeredgewidth=1.5,
            )  # fmt: skip
        ax.axvline(0.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_yticks(range(len(mine)), [str(r["model"]) for r in mine], fontsize=8)
        ax.set_ylim(-0.7, len(mine) - 0.3)
        ax.invert_yaxis()
        better = mine[0].get("better")
        suffix = f" ({better} is better)" if better else ""
        ax.set_title(f"{metric}{suffix}", fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return finish(fig, path)
