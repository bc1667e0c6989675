"""The pictures of a comparison: functions of a :class:`~attnviz.analysis.Comparison`'s numbers,
drawn with :mod:`attnviz.plots` (the comparison only reaches them through ``figures()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from matplotlib.figure import Figure

from .. import plots
from ..plots import finish, new_figure

if TYPE_CHECKING:
    from .comparison import Comparison

__all__ = ["comparison_figures"]

_FEATURE_LABELS = {
    "mean": "mean activation",
    "std": "activation std",
    "sparsity": "sparsity (share of zeros)",
    "channel_gini": "channel-energy Gini",
    "spatial_entropy": "spatial entropy (normalized)",
}


def _class_name(c: Comparison, k: int) -> str:
    return c.class_names[k] if c.class_names and k < len(c.class_names) else f"class {k}"


def _gate_histograms(c: Comparison) -> Figure | None:
    per_model: dict[str, dict[str, dict]] = {}
    for n in c.names:
        stages: dict[str, dict] = {}
        for gate, stats in c.results[n]["gates"].items():
            stage = c.gate_stages[n].get(gate, "?")
            merged = stages.setdefault(
                stage,
                {
                    "histogram": torch.zeros_like(stats["histogram"]),
                    "bin_edges": stats["bin_edges"],
                    "_sum": 0.0,
                    "_n": 0,
                },
            )
            merged["histogram"] = merged["histogram"] + stats["histogram"]
            merged["_sum"] += stats["mean"] * stats["n_values"]
            merged["_n"] += stats["n_values"]
        for entry in stages.values():
            entry["mean"] = entry.pop("_sum") / max(entry.pop("_n"), 1)
        if stages:
            per_model[n] = {s: stages[s] for s in c.layers if s in stages}
    if not per_model:
        return None
    return plots.gate_histograms(per_model, title="attention gate values per stage (dashed: mean)")


def _gate_profiles(c: Comparison) -> dict[str, Figure]:
    """The SE paper's excitation figure: per-class mean gate of the last gated block of each stage."""
    figs = {}
    for n in c.names:
        last_of_stage: dict[str, str] = {}
        for gate, stage in c.gate_stages.get(n, {}).items():
            stats = c.results[n]["gates"].get(gate)
            if stats is not None and stats["mean_profile"].numel() > 1:  # channel gates only
                last_of_stage[stage] = gate
        for stage, gate in last_of_stage.items():
            stats = c.results[n]["gates"].get(gate)
            if "class_profiles" not in stats:
                continue
            profiles = {
                _class_name(c, k): row
                for k, row in enumerate(stats["class_profiles"])
                if torch.isfinite(row).all() and stats["class_counts"][k] > 0
            }
            if profiles:
                eta = stats.get("class_specificity")
                title = (
                    f"{n}: {gate} (stage {stage}); class specificity η² = {eta:.3f}"
                    if eta is not None
                    else None
                )
                figs[f"gate_profile_{n}_{stage}"] = plots.gate_profiles(
                    profiles, layer=gate, title=title
                )
    return figs


def _cam_panels(c: Comparison) -> Figure | None:
    if not c.panels:
        return None
    images = torch.stack([p.image for p in c.panels])
    if c.denormalize is None:  # normalisation unknown: stretch each image to [0, 1] for display
        flat = images.flatten(1)
        lo, hi = flat.amin(1)[:, None, None, None], flat.amax(1)[:, None, None, None]
        images = (images - lo) / (hi - lo).clamp_min(1e-12)
    cams = {}
    for n in c.names:
        cams[n] = torch.stack([p.cams[n] for p in c.panels])
    # one shared maximum per image across models: magnitudes compare along each row
    peak = torch.stack([m.flatten(1).amax(1) for m in cams.values()]).amax(0).clamp_min(1e-12)
    cams = {n: m / peak[:, None, None] for n, m in cams.items()}
    scores = {n: [p.probs[n] for p in c.panels] for n in c.names}
    labels = [f"{_class_name(c, p.label)} (Δ {p.score:.2f})" for p in c.panels]
    masks = None
    if all(p.mask is not None for p in c.panels):
        masks = torch.stack([p.mask for p in c.panels]).float()
    return plots.cam_grid(
        images,
        cams,
        masks=masks,
        difference=len(c.names) > 1,
        shared_scale=True,
        scores=scores,
        row_labels=labels,
        max_images=len(c.panels),
        denormalize=c.denormalize,
        title=f"{c.primary_method} at {c.cam_layer[c.baseline]}: where the models disagree most",
    )


def _faithfulness_curves(c: Comparison) -> Figure | None:
    if not all("faithfulness" in c.results[n] for n in c.names):
        return None
    fig = new_figure(9.0, 3.4)
    axes = fig.subplots(1, 2)
    for ax, key, label in (
        (axes[0], "deletion", "deletion (lower is better)"),
        (axes[1], "insertion", "insertion (higher is better)"),
    ):
        for n in c.names:
            f = c.results[n]["faithfulness"]
            ax.plot(
                f["fractions"].numpy(),
                f[f"{key}_curve"].numpy(),
                label=f"{n} (AUC {f[f'{key}_auc']:.3f})",
            )
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("fraction of pixels", fontsize=9)
        ax.set_ylabel("P(true class)", fontsize=9)
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=8)
    fig.suptitle(f"faithfulness of {c.primary_method} maps (RISE)", fontsize=11)
    return finish(fig, None)


def _panel_images(c: Comparison) -> torch.Tensor:
    images = torch.stack([p.image for p in c.panels])
    if c.denormalize is None:  # normalization unknown: stretch each image to [0, 1] for display
        flat = images.flatten(1)
        lo, hi = flat.amin(1)[:, None, None, None], flat.amax(1)[:, None, None, None]
        images = (images - lo) / (hi - lo).clamp_min(1e-12)
    return images


def _spatial_gates(c: Comparison) -> Figure | None:
    """The deepest spatial gate (CBAM, BAM, triplet...) of each model on the panel images."""
    spatial = (c.attention_maps or {}).get("spatial") or {}
    if not spatial or not c.panels:
        return None
    maps = {}
    for n, (gate, m) in spatial.items():
        flat = m.flatten(1)
        lo, hi = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
        maps[f"{n}: {gate}"] = (m - lo) / (hi - lo).clamp_min(1e-12)
    return plots.cam_grid(
        _panel_images(c),
        maps,
        row_labels=[_class_name(c, p.label) for p in c.panels],
        max_images=len(c.panels),
        denormalize=c.denormalize,
        title="spatial attention gates on the CAM panels' images (each map min-max scaled)",
    )


def _query_maps(c: Comparison) -> dict[str, Figure]:
    figs = {}
    for n, (block, maps, points) in ((c.attention_maps or {}).get("queries") or {}).items():
        labels = ["query at the baseline CAM peak", "query at the centre", "query in a corner"]
        labels = labels[-maps.shape[1] :] if maps.shape[1] < 3 else labels
        figs[f"query_maps_{n}"] = plots.query_grid(
            _panel_images(c),
            maps,
            points,
            query_labels=labels,
            row_labels=[_class_name(c, p.label) for p in c.panels],
            denormalize=c.denormalize,
            title=f"{n}: where does each query position look? (self-attention of {block})",
        )
    return figs


def _forest(c: Comparison) -> Figure | None:
    rows = c.tests()
    if not rows:
        return None
    return plots.forest_plot(
        [{**r, "metric": r["label"]} for r in rows],
        title=f"each variant − {c.baseline} (95% CI; filled: significant after Holm)",
    )


def _accuracy(c: Comparison) -> Figure:
    """Accuracy bars from 0 (a one-image difference must not look dramatic), with the interval
    of each variant's accuracy implied by its paired difference to the baseline."""
    acc = {n: 100 * c.results[n]["classification"]["accuracy"] for n in c.names}
    intervals = {}
    base = acc[c.baseline]
    for n in c.names[1:]:
        t = c.paired.get((n, "accuracy"))
        if t and t.get("ci_low") is not None and t.get("ci_high") is not None:
            intervals[n] = (base + 100 * t["ci_low"], base + 100 * t["ci_high"])
    return plots.bar_chart(
        acc,
        ylabel="accuracy %",
        title=f"accuracy on {c.n_images} images (bars: baseline + 95% CI of the difference)",
        zoom=False,
        intervals=intervals or None,
    )


def comparison_figures(c: Comparison) -> dict[str, Figure]:
    figs: dict[str, Figure] = {}
    forest = _forest(c)
    if forest is not None:
        figs["forest"] = forest
    figs["accuracy"] = _accuracy(c)
    for metric, label in _FEATURE_LABELS.items():
        table = {
            n: {layer: c.results[n]["features"][layer][metric] for layer in c.layers}
            for n in c.names
        }
        figs[f"features_{metric}"] = plots.metric_curves(table, label, title=f"{label} per layer")
    if len(c.names) > 1:
        table = {
            n: {layer: v["cka"] for layer, v in c.results[n]["cka"].items()} for n in c.names[1:]
        }
        figs["cka"] = plots.metric_curves(
            table,
            f"linear CKA vs {c.baseline}",
            title=f"representation similarity to {c.baseline} (minibatch linear CKA)",
        )
    gates = _gate_histograms(c)
    if gates is not None:
        figs["gate_histograms"] = gates
    figs.update(_gate_profiles(c))
    panels = _cam_panels(c)
    if panels is not None:
        figs["cam_panels"] = panels
    gates = _spatial_gates(c)
    if gates is not None:
        figs["spatial_gates"] = gates
    figs.update(_query_maps(c))
    if c.feature_example:
        figs["feature_maps"] = plots.compare_feature_maps(
            c.feature_example,
            max_channels=12,
            normalize="shared",
            title=f"feature maps at {c.feature_layer} (first image, shared scale per channel)",
        )
    faith = _faithfulness_curves(c)
    if faith is not None:
        figs["faithfulness"] = faith
    return figs
