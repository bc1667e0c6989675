"""The result of :func:`attnviz.compare`: tables, figures and the HTML report.

Everything is computed from the streaming accumulators when the comparison
ends; the object holds numbers (and the few images kept for panels), never
the feature maps of the dataset.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from .panels import Panel

__all__ = ["Comparison"]

#: Summary columns: (key, header, format) in the order they are shown.
SUMMARY_COLUMNS = [
    ("accuracy", "acc", "{:.3f}"),
    ("mean_true_confidence", "conf", "{:.3f}"),
    ("params_m", "params(M)", "{:.3f}"),
    ("attention_params", "attn params", "{:,.0f}"),
    ("gflops", "GFLOPs", "{:.4f}"),
    ("latency_ms", "ms/img", "{:.2f}"),
    ("mean_cka", "CKA vs base", "{:.3f}"),
    ("cam_pearson", "CAM r vs base", "{:.3f}"),
    ("pointing_game", "pointing", "{:.3f}"),
    ("energy_pointing_game", "energy PG", "{:.3f}"),
    ("cam_iou", "IoU@0.5", "{:.3f}"),
    ("deletion_auc", "deletion↓", "{:.3f}"),
    ("insertion_auc", "insertion↑", "{:.3f}"),
    ("average_drop_pct", "avg drop%↓", "{:.1f}"),
    ("gate_specificity", "gate η² (last stage)", "{:.3f}"),
]

FEATURE_METRICS = ("mean", "std", "sparsity", "channel_gini", "spatial_entropy")


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() > 1 else float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class Comparison:
    """Numbers and pictures of a before/after comparison (see :func:`attnviz.compare`).

    ``results[model]`` holds ``classification``, ``cost``, ``features[layer]``,
    ``cka[layer]`` (variants), ``gates[gate]``, ``cam[method]`` (concentration,
    agreement, localisation) and ``faithfulness``; ``definitions`` says how
    every metric is defined and with which settings.
    """

    names: list[str]
    layers: list[str]
    methods: list[str]
    results: dict[str, dict[str, Any]]
    definitions: dict[str, dict[str, Any]]
    layer_names: dict[str, dict[str, str]] = field(default_factory=dict)
    gate_stages: dict[str, dict[str, str]] = field(default_factory=dict)
    cam_layer: dict[str, str] = field(default_factory=dict)
    panels: list[Panel] = field(default_factory=list)
    feature_example: dict[str, torch.Tensor] = field(default_factory=dict)
    feature_layer: str = ""
    n_images: int = 0
    class_names: list[str] | None = None
    denormalize: tuple[Sequence[float], Sequence[float]] | None = None
    state_elements: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    _figures: dict[str, Figure] | None = field(default=None, repr=False, compare=False)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_accumulators(
        cls,
        *,
        names: list[str],
        layers: list[str],
        layer_names: dict[str, dict[str, str]],
        gate_stages: dict[str, dict[str, str]],
        cam_layer: dict[str, str],
        methods: list[str],
        accumulators: dict[str, Any],
        costs: dict[str, dict[str, float]],
        panels: list[Panel],
        feature_example: dict[str, torch.Tensor],
        feature_layer: str,
        faithfulness: bool,
        has_masks: bool,
        n_images: int,
        class_names: list[str] | None,
        primary_method: str,
        denormalize: Any = None,
        inputs: dict[str, Any] | None = None,
    ) -> Comparison:
        acc = accumulators
        results: dict[str, dict[str, Any]] = {}
        for n in names:
            r: dict[str, Any] = {
                "classification": acc["classification"][n].compute(),
                "cost": costs[n],
                "features": {layer: a.compute() for layer, a in acc["features"][n].items()},
                "cka": {
                    layer: a.compute() for layer, a in acc["cka"].get(n, {}).items() if a.updated
                },
                "gates": {g: a.compute() for g, a in acc["gates"][n].items() if a.updated},
                "cam": {},
            }
            for m in methods:
                entry = {"concentration": acc["concentration"][n][m].compute()}
                if n in acc["agreement"] and acc["agreement"][n][m].updated:
                    entry["agreement"] = acc["agreement"][n][m].compute()
                if has_masks and acc["localization"][n][m].updated:
                    entry["localization"] = acc["localization"][n][m].compute()
                r["cam"][m] = entry
            if faithfulness:
                r["faithfulness"] = {
                    **acc["faithfulness"][n].compute(),
                    **acc["confidence"][n].compute(),
                }
            results[n] = r
        definitions = _definitions(acc, names, methods, faithfulness, has_masks, primary_method)
        state_elements = {group: _state_elements(per) for group, per in acc.items()}
        return cls(
            names=names,
            layers=layers,
            methods=methods,
            results=results,
            definitions=definitions,
            layer_names=layer_names,
            gate_stages=gate_stages,
            cam_layer=cam_layer,
            panels=panels,
            feature_example=feature_example,
            feature_layer=feature_layer,
            n_images=n_images,
            class_names=class_names,
            denormalize=denormalize,
            state_elements=state_elements,
            inputs=dict(inputs or {}),
        )

    # -- tables ---------------------------------------------------------------------------
    @property
    def baseline(self) -> str:
        return self.names[0]

    @property
    def primary_method(self) -> str:
        return self.methods[0]

    def table(self) -> list[dict[str, Any]]:
        """Long form: one row per (model, layer, metric) with its value."""
        rows: list[dict[str, Any]] = []

        def add(model: str, layer: str, metric: str, value: Any) -> None:
            if isinstance(value, int | float) and not isinstance(value, bool):
                rows.append(
                    {"model": model, "layer": layer, "metric": metric, "value": float(value)}
                )

        for n in self.names:
            r = self.results[n]
            for k, v in r["classification"].items():
                add(n, "", f"classification.{k}", v)
            for k, v in r["cost"].items():
                add(n, "", f"cost.{k}", v)
            for layer, stats in r["features"].items():
                for k in FEATURE_METRICS:
                    add(n, layer, f"features.{k}", stats.get(k))
            for layer, stats in r["cka"].items():
                add(n, layer, "cka", stats.get("cka"))
            for gate, stats in r["gates"].items():
                for k in ("mean", "std", "class_specificity", "class_specificity_adjusted"):
                    add(n, gate, f"gate.{k}", stats.get(k))
            for m, entry in r["cam"].items():
                layer = self.cam_layer[n]
                add(n, layer, f"cam.{m}.entropy", entry["concentration"].get("entropy"))
                for k in ("pearson", "spearman", "top_iou"):
                    if "agreement" in entry:
                        add(n, layer, f"cam.{m}.{k}", entry["agreement"].get(k))
                for k in (
                    "pointing_game",
                    "pointing_game_class_mean",
                    "energy_pointing_game",
                    "iou",
                ):
                    if "localization" in entry:
                        add(n, layer, f"localization.{m}.{k}", entry["localization"].get(k))
            for k in (
                "deletion_auc",
                "insertion_auc",
                "average_drop_pct",
                "increase_in_confidence_pct",
            ):
                if "faithfulness" in r:
                    add(n, self.cam_layer[n], f"faithfulness.{k}", r["faithfulness"].get(k))
        return rows

    def summary(self) -> list[dict[str, Any]]:
        """One row per model: accuracy, cost, similarity to the baseline, CAM quality."""
        out = []
        m = self.primary_method
        for n in self.names:
            r = self.results[n]
            cam = r["cam"][m]
            gates = r["gates"]
            last = [
                g
                for g, stage in self.gate_stages.get(n, {}).items()
                if stage == self.layers[-1] and g in gates and gates[g]["mean_profile"].numel() > 1
            ]
            spec = [gates[g].get("class_specificity") for g in last]
            spec = [s for s in spec if s is not None and math.isfinite(s)]
            row = {
                "model": n,
                "accuracy": r["classification"].get("accuracy"),
                "mean_true_confidence": r["classification"].get("mean_true_confidence"),
                "params_m": r["cost"]["params"] / 1e6,
                "attention_params": r["cost"]["attention_params"],
                "gflops": r["cost"]["flops"] / 1e9,
                "latency_ms": r["cost"]["latency_ms"],
                "mean_cka": _mean([v.get("cka") for v in r["cka"].values()]) if r["cka"] else None,
                "cam_pearson": cam.get("agreement", {}).get("pearson"),
                "pointing_game": cam.get("localization", {}).get("pointing_game"),
                "energy_pointing_game": cam.get("localization", {}).get("energy_pointing_game"),
                "cam_iou": cam.get("localization", {}).get("iou"),
                "deletion_auc": r.get("faithfulness", {}).get("deletion_auc"),
                "insertion_auc": r.get("faithfulness", {}).get("insertion_auc"),
                "average_drop_pct": r.get("faithfulness", {}).get("average_drop_pct"),
                "gate_specificity": _mean(spec) if spec else None,
            }
            out.append(row)
        return out

    def summary_text(self) -> str:
        """The summary as an aligned text table (what the CLI prints)."""
        rows = self.summary()
        cols = [c for c in SUMMARY_COLUMNS if any(r.get(c[0]) is not None for r in rows)]
        header = ["model", *[c[1] for c in cols]]
        body = [
            [r["model"], *[("-" if r.get(k) is None else f.format(r[k])) for k, _, f in cols]]
            for r in rows
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
        lines = [
            "  ".join(
                str(x).rjust(w) if i else str(x).ljust(w)
                for i, (x, w) in enumerate(zip(line, widths))
            )
            for line in [header, *body]
        ]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`table` as CSV (model, layer, metric, value)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["model", "layer", "metric", "value"])
            writer.writeheader()
            writer.writerows(self.table())
        return path

    def summary_to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.summary()
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path

    def to_json(self, path: str | Path | None = None) -> dict[str, Any]:
        """Everything as plain JSON (summary, table, per-model results, definitions); written to ``path`` if given."""
        data = {
            "models": self.names,
            "baseline": self.baseline,
            "layers": self.layers,
            "layer_names": self.layer_names,
            "cam_layer": self.cam_layer,
            "cam_methods": self.methods,
            "n_images": self.n_images,
            "inputs": self.inputs,
            "summary": self.summary(),
            "table": self.table(),
            "results": _plain(self.results),
            "definitions": _plain(self.definitions),
        }
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1))
        return data

    # -- figures -----------------------------------------------------------------------------
    def figures(self) -> dict[str, Figure]:
        """Every picture of the comparison by name (matplotlib figures, built once and kept)."""
        from .figures import comparison_figures

        if self._figures is None:
            self._figures = comparison_figures(self)
        return dict(self._figures)

    def save_figures(self, folder: str | Path) -> dict[str, Path]:
        """Write every figure as PNG into ``folder``; returns name -> path."""
        from ..plots import save_figure

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return {
            name: save_figure(fig, folder / f"{name.replace('/', '__')}.png")
            for name, fig in self.figures().items()
        }

    def report(
        self, path: str | Path, *, title: str = "attnviz: what did attention change?"
    ) -> Path:
        """One self-contained HTML file: summary first, then figures, then definitions."""
        from ..report import write_report

        return write_report(self, path, title=title)

    def __repr__(self) -> str:
        return f"Comparison({self.names}, {self.n_images} images, layers={self.layers})\n{self.summary_text()}"


def _state_elements(tree: Any) -> int:
    """How many numbers the accumulators under ``tree`` hold (fixed, whatever the image count)."""
    if isinstance(tree, dict):
        return sum(_state_elements(v) for v in tree.values())
    return sum(t.numel() for t in tree.states.values())


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def _definitions(
    acc, names, methods, faithfulness, has_masks, primary
) -> dict[str, dict[str, Any]]:
    """Metric definitions and settings, from the accumulators themselves."""
    base = names[0]

    def entry(a) -> dict[str, Any]:
        return {"definition": a.definition, "settings": _plain(a.settings())}

    out = {
        "classification": entry(acc["classification"][base]),
        "features": entry(next(iter(acc["features"][base].values()))),
        "cam_concentration": entry(acc["concentration"][base][primary]),
        "cost": {
            "definition": "Parameters (total and inside attention blocks); FLOPs per image from "
            "torch.utils.flop_counter (2 per multiply-add in convolutions and matmuls; elementwise "
            "gating counts 0); latency per image = median of 3 timed eval forwards of one batch / batch size.",
            "settings": {},
        },
        "cam": {
            "definition": "CAMs at the CAM layer for the true class: one forward and one gradient of the "
            "target logits down to the layer; map = ReLU(method), bilinearly upsampled to the input, min-max "
            "normalised per image (panels: divided by one shared maximum per image so magnitudes compare).",
            "settings": {"methods": list(methods), "primary": primary, "target": "true class"},
        },
    }
    if len(names) > 1:
        out["cka"] = entry(next(iter(acc["cka"][names[1]].values())))
        out["cam_agreement"] = entry(acc["agreement"][names[1]][primary])
    gate_acc = next((a for per in acc["gates"].values() for a in per.values()), None)
    if gate_acc is not None:
        out["gates"] = entry(gate_acc)
    if has_masks:
        out["localization"] = entry(acc["localization"][base][primary])
    if faithfulness:
        out["faithfulness"] = entry(acc["faithfulness"][base])
        out["confidence"] = entry(acc["confidence"][base])
    return out
