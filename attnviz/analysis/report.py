"""One self-contained HTML report of a comparison: what was compared on what, the
differences with their uncertainty, the summary, the figures and the definitions.

Images are inlined as base64 PNG and the page has no scripts and no external
resources, so it opens offline in any browser and can be mailed as one file.
:func:`notebook_html` is the same comparison in a notebook cell (``_repr_html_``).
"""

from __future__ import annotations

import base64
import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._atomic import atomic_write_text
from .._version import __version__
from ..plots import figure_to_png_bytes
from .columns import LEGEND, SUMMARY_COLUMNS

if TYPE_CHECKING:
    from .comparison import Comparison

__all__ = ["notebook_html", "write_report"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1d1d1f; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: .9rem; }
table { border-collapse: collapse; font-size: .86rem; margin: .8rem 0; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #e5e5e5; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f6; position: sticky; top: 0; }
tr.baseline td { background: #fafaf0; }
td.sig { font-weight: 600; color: #0b6e2f; } td.ns { color: #777; }
.legend { color: #555; font-size: .85rem; max-width: 900px; }
figure { margin: 1.4rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .88rem; margin-top: .3rem; }
dl dt { font-weight: 600; margin-top: .9rem; } dl dd { margin-left: 1rem; }
code { background: #f4f4f6; padding: 0 .25rem; border-radius: 3px; font-size: .85rem; }
details { margin: 1rem 0; }
"""

_CAPTIONS = {
    "forest": "Each variant minus the baseline on the same images, with its 95% confidence interval "
    "(streaming Poisson bootstrap); filled markers are significant after Holm's adjustment over the "
    "whole comparison, the dashed line is no difference.",
    "accuracy": "Top-1 accuracy of each model on the compared images, with the 95% interval of each "
    "variant's difference to the baseline (from 0, so small differences look small).",
    "cam_panels": "CAM overlays of the images where the models' maps disagree most (Δ = 1 − mean Pearson "
    "correlation with the baseline's map), each row on one shared scale so magnitudes compare, with each "
    "variant's difference to the baseline; P = softmax probability of the true class; the object's "
    "mask is outlined in white where the data has masks.",
    "spatial_gates": "The deepest spatial attention gate of each model (CBAM, BAM, triplet...) on the "
    "images of the CAM panels: where the block lets features through.",
    "cka": "Linear CKA between each variant and the baseline at corresponding layers (1 = the same "
    "representation up to rotation and scale), with 95% intervals over batches.",
    "gate_histograms": "Distribution of the attention gate values of each stage (all gated blocks of "
    "the stage); the dashed line is the mean.",
    "feature_maps": "The same layer of each model for the first image: the baseline's highest-energy "
    "channels, one shared colour scale per channel.",
    "faithfulness": "Deletion and insertion curves (RISE): how fast the true-class probability falls when "
    "the pixels the map ranks highest are removed, or rises when they are inserted.",
}
_FEATURE_CAPTIONS = {
    "mean": "Mean activation per layer.",
    "std": "Standard deviation of the activations per layer.",
    "sparsity": "Share of exactly-zero activations per layer.",
    "channel_gini": "Gini coefficient of the channel energies per layer: higher means energy in fewer channels.",
    "spatial_entropy": "Normalized spatial entropy of the energy per layer: lower means energy in fewer positions.",
}


def _img(fig) -> str:
    data = base64.b64encode(figure_to_png_bytes(fig, dpi=100)).decode("ascii")
    return f'<img alt="" src="data:image/png;base64,{data}">'


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "&ndash;"
    try:
        return html.escape(spec.format(value))
    except (ValueError, TypeError):
        return html.escape(str(value))


def _summary_table(c: Comparison) -> str:
    rows = c.summary()
    cols = [col for col in SUMMARY_COLUMNS if any(r.get(col.key) is not None for r in rows)]
    head = "".join(f"<th>{html.escape(col.header)}</th>" for col in cols)
    body = []
    for i, r in enumerate(rows):
        cells = "".join(f"<td>{_fmt(r.get(col.key), col.fmt)}</td>" for col in cols)
        cls = ' class="baseline"' if i == 0 else ""
        body.append(
            f"<tr{cls}><td>{html.escape(r['model'])}{' (baseline)' if i == 0 else ''}</td>{cells}</tr>"
        )
    return (
        f"<table><thead><tr><th>model</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _differences_table(c: Comparison) -> str:
    """Δ vs baseline with its interval and the Holm mark: the first thing a reader needs."""
    rows = c.tests()
    if not rows:
        return "<p>One model: nothing to compare against.</p>"
    level = round(100 * c.bootstrap.get("level", 0.95))
    head = (
        "<th>variant</th><th>metric</th><th>baseline</th><th>variant</th>"
        f"<th>Δ</th><th>{level}% CI</th><th>p (Holm)</th><th>test</th>"
    )
    body = []
    for r in rows:
        fmt = next((col.fmt for col in SUMMARY_COLUMNS if col.key == r["metric"]), "{:.3f}")
        ci = (
            f"[{_fmt(r['ci_low'], fmt)}, {_fmt(r['ci_high'], fmt)}]"
            if r["ci_low"] is not None
            else "&ndash;"
        )
        cls = "sig" if r["significant"] else "ns"
        mark = " *" if r["significant"] else ""
        better = f" ({r['better']} is better)" if r.get("better") else ""
        body.append(
            f"<tr><td>{html.escape(r['model'])}</td><td>{html.escape(r['label'])}"
            f"{html.escape(better)}</td><td>{_fmt(r['baseline'], fmt)}</td>"
            f'<td>{_fmt(r["variant"], fmt)}</td><td class="{cls}">{_fmt(r["delta"], fmt)}{mark}</td>'
            f"<td>{ci}</td><td>{_fmt(r['p_adj'], '{:.3g}')}</td><td>{html.escape(str(r['test']))}</td></tr>"
        )
    b = c.bootstrap
    legend = f"{LEGEND} B = {b.get('replicates')}, seed {b.get('seed')}."
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f'<p class="legend">{html.escape(legend)}</p>'
    )


def _inputs(c: Comparison) -> str:
    """What the models ran on: resolution, data, contract, where each model's weights came from."""
    inp = c.inputs or {}
    parts = []
    size = inp.get("image_size")
    if size:
        parts.append(f"images at <b>{size[0]}×{size[1]}</b> px")
    if inp.get("data"):
        parts.append(f"data <code>{html.escape(str(inp['data']))}</code>")
    contract = inp.get("contract") or {}
    if contract:
        parts.append(
            f"input contract: resize <code>{html.escape(str(contract.get('resize')))}</code>, "
            f"from {html.escape(str(contract.get('source')))}"
        )
    faith = inp.get("faithfulness")
    if faith:
        scope = (
            "all images" if faith.get("images") is None else f"the first {faith['images']} images"
        )
        parts.append(
            f"faithfulness on {scope} ({faith.get('measured_on')} measured), {faith.get('steps')} steps"
        )
    if (inp.get("processes") or 1) > 1:
        parts.append(f"{inp['processes']} processes (torchrun)")
    models = inp.get("models") or {}
    origins = "".join(
        f"<li><b>{html.escape(n)}</b>: weights {html.escape(str(m.get('weights')))}</li>"
        for n, m in models.items()
    )
    return f'<p class="meta">{"; ".join(parts)}.</p>' + (
        f'<ul class="meta">{origins}</ul>' if origins else ""
    )


def _layer_table(c: Comparison) -> str:
    metrics = [
        "features.mean",
        "features.sparsity",
        "features.channel_gini",
        "features.spatial_entropy",
        "cka",
    ]
    rows = {(r["model"], r["layer"], r["metric"]): r["value"] for r in c.table()}
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = []
    for n in c.names:
        for layer in c.layers:
            cells = "".join(f"<td>{_fmt(rows.get((n, layer, m)), '{:.4f}')}</td>" for m in metrics)
            body.append(f"<tr><td>{html.escape(n)} &middot; {html.escape(layer)}</td>{cells}</tr>")
    return f"<table><thead><tr><th>model &middot; layer</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _definitions(c: Comparison) -> str:
    items = []
    for name, entry in c.definitions.items():
        settings = entry.get("settings") or {}
        settings_html = (
            f"<br><code>{html.escape(json.dumps(settings, default=str))}</code>" if settings else ""
        )
        items.append(
            f"<dt>{html.escape(name)}</dt><dd>{html.escape(entry.get('definition', ''))}{settings_html}</dd>"
        )
    return f"<dl>{''.join(items)}</dl>"


def _figure_sections(c: Comparison) -> str:
    figs = c.figures()
    order = ["forest", "accuracy", "cam_panels", "spatial_gates"]
    order += sorted(k for k in figs if k.startswith("query_maps_"))
    order += ["cka", "gate_histograms"]
    order += sorted(k for k in figs if k.startswith("gate_profile_"))
    order += ["feature_maps", "faithfulness", *sorted(k for k in figs if k.startswith("features_"))]
    sections = []
    for key in [k for k in order if k in figs]:
        caption = _CAPTIONS.get(key)
        if caption is None and key.startswith("features_"):
            caption = _FEATURE_CAPTIONS.get(key[len("features_") :])
        if caption is None and key.startswith("query_maps_"):
            caption = (
                "Self-attention of the deepest attention block: for a few query positions (white "
                "crosses), the weights it puts on every position of the map."
            )
        if caption is None and key.startswith("gate_profile_"):
            caption = (
                "Per-class mean gate of the last gated block of a stage (the SE paper's excitation "
                "analysis); η² is the share of the gates' variance explained by the class."
            )
        sections.append(
            f"<figure>{_img(figs[key])}<figcaption>{html.escape(caption or key.replace('_', ' ') + '.')}"
            "</figcaption></figure>"
        )
    return "".join(sections)


def write_report(c: Comparison, path: str | os.PathLike, *, title: str) -> Path:
    """Render ``c`` to one HTML file (written atomically); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layers = ", ".join(html.escape(x) for x in c.layers)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">{len(c.names)} models (baseline <b>{html.escape(c.baseline)}</b>), {c.n_images} images;
layers: {layers}; CAM: {html.escape(", ".join(c.methods))} at <code>{html.escape(c.cam_layer[c.baseline])}</code>.
attnviz {__version__}, {stamp}.</p>
{_inputs(c)}
<h2>What changed: each variant against the baseline</h2>
{_differences_table(c)}
<h2>Summary</h2>
{_summary_table(c)}
<h2>Figures</h2>
{_figure_sections(c)}
<h2>Per-layer numbers</h2>
<details><summary>feature statistics and CKA per layer</summary>{_layer_table(c)}</details>
<h2>Metric definitions and settings</h2>
{_definitions(c)}
</body></html>
"""
    return atomic_write_text(path, page)


def notebook_html(c: Comparison) -> str:
    """A comparison in a notebook cell: its inputs, the differences, the summary, the forest plot."""
    figs = c.figures()
    key = "forest" if "forest" in figs else "accuracy"
    return (
        f"<div><b>attnviz comparison</b>: {len(c.names)} models, {c.n_images} images"
        f"{_inputs(c)}{_differences_table(c)}{_summary_table(c)}"
        f"<figure>{_img(figs[key])}</figure></div>"
    )
