"""The result of :func:`attnviz.compare`: plain numbers, their uncertainty, and views of them.

Everything is computed from the streaming accumulators when the comparison ends; the
object holds numbers (and the few images kept for panels), never the feature maps of
the dataset. Tables are methods (:meth:`Comparison.summary`, :meth:`Comparison.tests`,
:meth:`Comparison.table`); the pictures and the HTML report are functions of the
comparison in :mod:`attnviz.analysis.figures` and :mod:`attnviz.analysis.report`, reached
through :meth:`Comparison.figures` and :meth:`Comparison.report`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..stats import holm_significance
from .columns import FEATURE_METRICS, LEGEND, SUMMARY_COLUMNS, TESTED
from .panels import Panel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .accumulators import Bootstrap, ModelStats

__all__ = ["Comparison"]


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


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass
class Comparison:
    """Numbers and pictures of a before/after comparison (see :func:`attnviz.compare`).

    ``results[model]`` holds ``classification``, ``cost``, ``features[layer]``,
    ``cka[layer]`` (variants), ``gates[gate]``, ``cam[method]`` (concentration,
    agreement, localization) and ``faithfulness``; ``paired[(variant, key)]`` the
    before/after tests (:meth:`tests`); ``definitions`` says how every metric is defined
    and with which settings; ``inputs`` what the models ran on.
    """

    names: list[str]
    layers: list[str]
    methods: list[str]
    results: dict[str, dict[str, Any]]
    definitions: dict[str, dict[str, Any]]
    paired: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    layer_names: dict[str, dict[str, str]] = field(default_factory=dict)
    gate_stages: dict[str, dict[str, str]] = field(default_factory=dict)
    cam_layer: dict[str, str] = field(default_factory=dict)
    panels: list[Panel] = field(default_factory=list)
    feature_example: dict[str, torch.Tensor] = field(default_factory=dict)
    feature_layer: str = ""
    n_images: int = 0
    class_names: list[str] | None = None
    denormalize: tuple[Sequence[float], Sequence[float]] | None = None
    state_elements: int = 0
    inputs: dict[str, Any] = field(default_factory=dict)
    bootstrap: dict[str, Any] = field(default_factory=dict)
    attention_maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    _figures: dict[str, Figure] | None = field(default=None, repr=False, compare=False)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_stats(
        cls,
        stats: Mapping[str, ModelStats],
        *,
        layers: list[str],
        layer_names: dict[str, dict[str, str]],
        gate_stages: dict[str, dict[str, str]],
        cam_layer: dict[str, str],
        methods: list[str],
        costs: dict[str, dict[str, float]],
        panels: list[Panel],
        feature_example: dict[str, torch.Tensor],
        feature_layer: str,
        faithfulness: bool,
        n_images: int,
        class_names: list[str] | None,
        denormalize: Any,
        bootstrap: Bootstrap,
        inputs: dict[str, Any],
        state_count: int,
        attention_maps: dict[str, dict[str, Any]] | None = None,
    ) -> Comparison:
        names = list(stats)
        base = stats[names[0]]
        has_masks = any(a.updated for s in stats.values() for a in s.localization.values())
        results = {}
        for n, s in stats.items():
            results[n] = s.results(methods, has_masks=has_masks, faithfulness=faithfulness)
            results[n]["cost"] = costs[n]
        raw = {(n, key): row for n in names[1:] for key, row in stats[n].tests(base).items()}
        family = {k: r for k, r in raw.items() if r.get("family") == "holm"}
        holm = holm_significance(family, alpha=1 - bootstrap.level)
        _warn_if_unresolvable(family, bootstrap, n_images)
        paired = {
            k: holm.get(k, {**r, "p_holm": None, "significant": None}) for k, r in raw.items()
        }
        return cls(
            names=names,
            layers=layers,
            methods=methods,
            results=results,
            definitions=_definitions(base, stats, methods, faithfulness, has_masks, bootstrap),
            paired=paired,
            layer_names=layer_names,
            gate_stages=gate_stages,
            cam_layer=cam_layer,
            panels=panels,
            feature_example=feature_example,
            feature_layer=feature_layer,
            n_images=n_images,
            class_names=class_names,
            denormalize=denormalize,
            state_elements=state_count,
            inputs=inputs,
            bootstrap={**bootstrap.kwargs(), "method": "streaming Poisson bootstrap"},
            attention_maps=attention_maps or {},
        )

    # -- tables ---------------------------------------------------------------------------
    @property
    def baseline(self) -> str:
        return self.names[0]

    @property
    def primary_method(self) -> str:
        return self.methods[0]

    def tests(self, *, layers: bool = False) -> list[dict[str, Any]]:
        """The before/after tests, one row per (variant, metric), as plain numbers.

        Columns: ``model``, ``metric`` (a summary key), ``label``, ``baseline``,
        ``variant``, ``delta``, ``ci_low``, ``ci_high``, ``p``, ``p_adj`` (Holm),
        ``significant`` (after adjustment), ``test``, ``n`` (images), ``better``. With
        ``layers=True`` also the per-layer feature statistics (intervals only: no
        ``p_adj``, not part of the Holm family).
        """
        out = []
        for (n, key), r in self.paired.items():
            if r.get("family") != "holm" and not layers:
                continue
            out.append(
                {
                    "model": n,
                    "metric": key,
                    "label": r.get("label", key),
                    "baseline": _finite(r.get("baseline")),
                    "variant": _finite(r.get("variant")),
                    "delta": _finite(r.get("delta")),
                    "ci_low": _finite(r.get("ci_low")),
                    "ci_high": _finite(r.get("ci_high")),
                    "p": _finite(r.get("p")),
                    "p_adj": _finite(r.get("p_holm")),
                    "significant": r.get("significant"),
                    "test": r.get("test") or r.get("method", "bootstrap"),
                    "n": r.get("n"),
                    "better": r.get("better"),
                }
            )
        return out

    def table(self) -> list[dict[str, Any]]:
        """Long form: one row per (model, layer, metric) with its value, its interval
        (``value_ci_low``, ``value_ci_high``) where the metric has one, and, for a variant,
        the paired difference to the baseline (``delta``, ``ci_low``, ``ci_high``,
        ``p_adj``, ``significant``) where it was tested."""
        rows: list[dict[str, Any]] = []

        def add(model: str, layer: str, metric: str, value: Any, ci=None, test=None) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return
            row = {"model": model, "layer": layer, "metric": metric, "value": float(value)}
            lo, hi = ci or (None, None)
            row["value_ci_low"], row["value_ci_high"] = _finite(lo), _finite(hi)
            t = self.paired.get((model, test)) if test else None
            row["delta"] = _finite(t.get("delta")) if t else None
            row["ci_low"] = _finite(t.get("ci_low")) if t else None
            row["ci_high"] = _finite(t.get("ci_high")) if t else None
            row["p_adj"] = _finite(t.get("p_holm")) if t else None
            row["significant"] = t.get("significant") if t else None
            rows.append(row)

        m0 = self.primary_method
        for n in self.names:
            r = self.results[n]
            for k, v in r["classification"].items():
                test = {"accuracy": "accuracy", "mean_true_confidence": "mean_true_confidence"}
                add(n, "", f"classification.{k}", v, test=test.get(k))
            for k, v in r["cost"].items():
                add(n, "", f"cost.{k}", v)
            for layer, stats in r["features"].items():
                for k in FEATURE_METRICS:
                    add(
                        n,
                        layer,
                        f"features.{k}",
                        stats.get(k),
                        (stats.get(f"{k}_ci_low"), stats.get(f"{k}_ci_high")),
                        test=f"features.{layer}.{k}",
                    )
            for layer, stats in r["cka"].items():
                add(
                    n,
                    layer,
                    "cka",
                    stats.get("cka"),
                    (stats.get("cka_ci_low"), stats.get("cka_ci_high")),
                )
            for gate, stats in r["gates"].items():
                for k in ("mean", "std", "class_specificity", "class_specificity_adjusted"):
                    add(
                        n,
                        gate,
                        f"gate.{k}",
                        stats.get(k),
                        (stats.get(f"{k}_ci_low"), stats.get(f"{k}_ci_high")),
                    )
            for m, entry in r["cam"].items():
                layer = self.cam_layer[n]
                add(n, layer, f"cam.{m}.entropy", entry["concentration"].get("entropy"))
                ci = r.get("agreement_ci", {}) if m == m0 else {}
                for k in ("pearson", "spearman", "top_iou"):
                    if "agreement" in entry:
                        b = ci.get(k, {})
                        add(
                            n,
                            layer,
                            f"cam.{m}.{k}",
                            entry["agreement"].get(k),
                            (b.get("ci_low"), b.get("ci_high")),
                        )
                loc_tests = {
                    "pointing_game": "pointing_game",
                    "energy_pointing_game": "energy_pointing_game",
                    "iou": "cam_iou",
                }
                for k in (
                    "pointing_game",
                    "pointing_game_class_mean",
                    "energy_pointing_game",
                    "iou",
                ):
                    if "localization" in entry:
                        add(
                            n,
                            layer,
                            f"localization.{m}.{k}",
                            entry["localization"].get(k),
                            test=loc_tests.get(k) if m == m0 else None,
                        )
            faith_tests = {
                "deletion_auc": "deletion_auc",
                "insertion_auc": "insertion_auc",
                "average_drop_pct": "average_drop_pct",
            }
            for k in (
                "deletion_auc",
                "insertion_auc",
                "average_drop_pct",
                "increase_in_confidence_pct",
            ):
                if "faithfulness" in r:
                    add(
                        n,
                        self.cam_layer[n],
                        f"faithfulness.{k}",
                        r["faithfulness"].get(k),
                        test=faith_tests.get(k),
                    )
        return rows

    def summary(self) -> list[dict[str, Any]]:
        """One row per model: accuracy, cost, similarity to the baseline, CAM quality; for a
        variant also ``{key}_delta``, ``_ci_low``, ``_ci_high``, ``_p_adj``, ``_significant``
        of every tested metric (:data:`~attnviz.analysis.columns.TESTED`)."""
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
            faith = r.get("faithfulness", {})
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
                "deletion_auc": faith.get("deletion_auc"),
                "insertion_auc": faith.get("insertion_auc"),
                "average_drop_pct": faith.get("average_drop_pct"),
                "increase_in_confidence_pct": faith.get("increase_in_confidence_pct"),
                "gate_specificity": _mean(spec) if spec else None,
            }
            for t in TESTED:
                test = self.paired.get((n, t.summary))
                for col, key in (
                    ("delta", "delta"),
                    ("ci_low", "ci_low"),
                    ("ci_high", "ci_high"),
                    ("p_adj", "p_holm"),
                ):
                    row[f"{t.summary}_{col}"] = _finite(test.get(key)) if test else None
                row[f"{t.summary}_significant"] = test.get("significant") if test else None
            out.append(row)
        return out

    def summary_text(self) -> str:
        """The summary as an aligned text table (what the CLI prints)."""
        rows = self.summary()
        cols = [c for c in SUMMARY_COLUMNS if any(r.get(c.key) is not None for r in rows)]
        header = ["model", *[c.header for c in cols]]
        body = [
            [r["model"], *[("-" if r.get(c.key) is None else c.fmt.format(r[c.key])) for c in cols]]
            for r in rows
        ]
        return _aligned(header, body)

    def differences_text(self) -> str:
        """Each variant against the baseline: Δ [95% CI], Holm-adjusted p and a mark (text)."""
        rows = self.tests()
        if not rows:
            return ""
        level = round(100 * self.bootstrap.get("level", 0.95))
        header = ["model", "metric", "baseline", "variant", f"Δ [{level}% CI]", "p_holm", ""]
        body = []
        for r in rows:
            fmt = _format_of(r["metric"])
            delta = "-" if r["delta"] is None else fmt.format(r["delta"])
            ci = (
                f" [{fmt.format(r['ci_low'])}, {fmt.format(r['ci_high'])}]"
                if r["ci_low"] is not None and r["ci_high"] is not None
                else ""
            )
            body.append(
                [
                    r["model"],
                    r["label"],
                    "-" if r["baseline"] is None else fmt.format(r["baseline"]),
                    "-" if r["variant"] is None else fmt.format(r["variant"]),
                    delta + ci,
                    "-" if r["p_adj"] is None else f"{r['p_adj']:.3g}",
                    "*" if r["significant"] else "",
                ]
            )
        b = self.bootstrap
        legend = (
            f"{LEGEND} B = {b.get('replicates')}, seed {b.get('seed')}, {self.n_images} images."
        )
        return _aligned(header, body) + "\n" + legend

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`table` as CSV."""
        return _write_csv(path, self.table())

    def summary_to_csv(self, path: str | Path) -> Path:
        return _write_csv(path, self.summary())

    def tests_to_csv(self, path: str | Path) -> Path:
        return _write_csv(path, self.tests(layers=True))

    def to_json(self, path: str | Path | None = None) -> dict[str, Any]:
        """Everything as plain JSON (summary, tests, table, per-model results, definitions,
        inputs, bootstrap settings); written to ``path`` if given."""
        data = {
            "models": self.names,
            "baseline": self.baseline,
            "layers": self.layers,
            "layer_names": self.layer_names,
            "cam_layer": self.cam_layer,
            "cam_methods": self.methods,
            "n_images": self.n_images,
            "inputs": _plain(self.inputs),
            "bootstrap": self.bootstrap,
            "summary": _plain(self.summary()),
            "tests": _plain(self.tests(layers=True)),
            "table": _plain(self.table()),
            "results": _plain(self.results),
            "definitions": _plain(self.definitions),
        }
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1))
        return data

    # -- figures and the report ---------------------------------------------------------------
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
        """One self-contained HTML file: summary and differences first, then figures, definitions."""
        from .report import write_report

        return write_report(self, path, title=title)

    def _repr_html_(self) -> str:
        from .report import notebook_html

        return notebook_html(self)

    def __repr__(self) -> str:
        text = f"Comparison({self.names}, {self.n_images} images, layers={self.layers})\n{self.summary_text()}"
        diff = self.differences_text()
        return text + ("\n\n" + diff if diff else "")


def _warn_if_unresolvable(
    family: Mapping[Any, Mapping[str, Any]], bootstrap: Any, n_images: int
) -> None:
    """Warn when B replicates cannot resolve a Holm-adjusted bootstrap p below alpha.

    A bootstrap p is at least that of "every replicate on one side" (``1/B``, widened for
    ``n`` images by :func:`attnviz.stats.bootstrap_pvalue`), and Holm multiplies the
    smallest p by the number of tests ``m``: when ``m`` times that floor reaches alpha no
    bootstrap-tested difference can be significant, however large.
    """
    from ..stats import bootstrap_pvalue

    alpha = 1 - bootstrap.level
    m = sum(1 for r in family.values() if r.get("p") is not None and math.isfinite(r["p"]))
    booted = any("mcnemar" not in str(r.get("test", "")).lower() for r in family.values())
    if not booted or not m or n_images < 2:
        return

    def floor(b: int) -> float:
        return bootstrap_pvalue(torch.ones(b), 0.0, n_images)

    smallest = floor(bootstrap.replicates)
    if m * smallest < alpha - 1e-12:
        return
    import warnings

    need = next(
        (b for b in (bootstrap.replicates * 2**k for k in range(1, 11)) if m * floor(b) < alpha),
        None,
    )
    advice = (
        f"use replicates >= {need}"
        if need is not None
        else f"{n_images} images are too few for {m} tests: use more images"
    )
    warnings.warn(
        f"compare: {m} tests share the Holm adjustment and B = {bootstrap.replicates} bootstrap "
        f"replicates on {n_images} images resolve p only down to {smallest:.2g}, "
        f"so no bootstrap-tested difference can be significant at {alpha:.2g}; {advice}",
        stacklevel=4,  # the caller of compare()
    )


def _format_of(key: str) -> str:
    try:
        return next(c.fmt for c in SUMMARY_COLUMNS if c.key == key)
    except StopIteration:
        return "{:.3f}"


def _aligned(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = [
        "  ".join(
            str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in [header, *body]
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def _write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["model"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def _definitions(
    base: ModelStats,
    stats: Mapping[str, ModelStats],
    methods: list[str],
    faithfulness: bool,
    has_masks: bool,
    bootstrap: Bootstrap,
) -> dict[str, dict[str, Any]]:
    """Metric definitions and settings, from the accumulators themselves."""
    primary = methods[0]

    def entry(a) -> dict[str, Any]:
        return {"definition": a.definition, "settings": _plain(a.settings())}

    out = {
        "classification": entry(base.classification),
        "features": entry(next(iter(base.features.values()))),
        "cam_concentration": entry(base.concentration[primary]),
        "cost": {
            "definition": "Parameters (total and inside attention blocks); FLOPs per image from "
            "torch.utils.flop_counter (2 per multiply-add in convolutions and matmuls; elementwise "
            "gating counts 0); latency per image = median of 3 timed eval forwards of one batch / batch size.",
            "settings": {},
        },
        "cam": {
            "definition": "CAMs at the CAM layer for the true class: one forward and one gradient of the "
            "target logits down to the layer; map = ReLU(method), bilinearly upsampled to the input, min-max "
            "normalized per image (panels: divided by one shared maximum per image so magnitudes compare).",
            "settings": {"methods": list(methods), "primary": primary, "target": "true class"},
        },
        "statistics": {
            "definition": LEGEND,
            "settings": {
                **bootstrap.kwargs(),
                "weights": "Poisson(1) per image, keyed by (seed, image position in the data); "
                "minibatch CKA: per batch",
                "interval": "expanded percentile (η²: basic)",
                "accuracy test": "McNemar exact (scipy.stats.binomtest)",
                "adjustment": "Holm over every (variant, metric) test",
            },
        },
    }
    variants = [s for s in stats.values() if not s.baseline]
    if variants:
        out["cka"] = entry(next(iter(variants[0].cka.values())))
        out["cam_agreement"] = entry(variants[0].agreement[primary])
    gate = next((a for s in stats.values() for a in s.gates.values()), None)
    if gate is not None:
        out["gates"] = entry(gate)
    if has_masks:
        out["localization"] = entry(base.localization[primary])
    if faithfulness:
        out["faithfulness"] = entry(base.faithfulness)
        out["confidence"] = entry(base.confidence)
    return out
