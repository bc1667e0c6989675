"""One self-contained HTML report of a comparison: summary, figures, definitions.

Images are inlined as base64 PNG and the page has no scripts and no external
resources, so it opens offline in any browser and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._atomic import atomic_write_text
from ._version import __version__
from .plots import figure_to_png_bytes

if TYPE_CHECKING:
    from .analysis.comparison import Comparison

__all__ = ["write_report"]

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
figure { margin: 1.4rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .88rem; margin-top: .3rem; }
dl dt { font-weight: 600; margin-top: .9rem; } dl dd { margin-left: 1rem; }
code { background: #f4f4f6; padding: 0 .25rem; border-radius: 3px; font-size: .85rem; }
details { margin: 1rem 0; }
"""

_CAPTIONS = {
    "accuracy": "Top-1 accuracy of each model on the compared images.",
    "cam_panels": "CAM overlays of the images where the models' maps disagree most (Δ = 1 − mean Pearson "
    "correlation with the baseline's map), each row on one shared scale so magnitudes compare, with each "
    "variant's difference to the baseline; P = softmax probability of the true class.",
    "cka": "Linear CKA between each variant and the baseline at corresponding layers: 1 = the same "
    "representation up to rotation and scale.",
    "gate_histograms": "Distribution of attention gate values, per stage (all gated blocks of the stage).",
    "feature_maps": "The same layer of each model for the first image, highest-energy channels of the baseline.",
    "faithfulness": "Deletion and insertion curves (RISE): how fast the true-class probability falls when the "
    "pixels the map ranks highest are removed, or rises when they are inserted.",
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
    from .analysis.comparison import SUMMARY_COLUMNS

    rows = c.summary()
    cols = [col for col in SUMMARY_COLUMNS if any(r.get(col[0]) is not None for r in rows)]
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in cols)
    body = []
    for i, r in enumerate(rows):
        cells = "".join(f"<td>{_fmt(r.get(k), f)}</td>" for k, _, f in cols)
        cls = ' class="baseline"' if i == 0 else ""
        body.append(
            f"<tr{cls}><td>{html.escape(r['model'])}{' (baseline)' if i == 0 else ''}</td>{cells}</tr>"
        )
    return (
        f"<table><thead><tr><th>model</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
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


def write_report(c: Comparison, path: str | os.PathLike, *, title: str) -> Path:
    """Render ``c`` to one HTML file (written atomically); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figs = c.figures()
    order = ["accuracy", "cam_panels", "cka", "gate_histograms"]
    order += sorted(k for k in figs if k.startswith("gate_profile_"))
    order += ["feature_maps", "faithfulness", *sorted(k for k in figs if k.startswith("features_"))]
    sections = []
    for key in [k for k in order if k in figs]:
        caption = _CAPTIONS.get(key) or key.replace("_", " ")
        sections.append(
            f"<figure>{_img(figs[key])}<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
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
<h2>Summary</h2>
{_summary_table(c)}
<h2>Figures</h2>
{"".join(sections)}
<h2>Per-layer numbers</h2>
<details><summary>feature statistics and CKA per layer</summary>{_layer_table(c)}</details>
<h2>Metric definitions and settings</h2>
{_definitions(c)}
</body></html>
"""
    return atomic_write_text(path, page)
