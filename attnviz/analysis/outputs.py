"""Writing a comparison to a folder: the report, the tables, the JSON and the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_outputs"]


def write_outputs(result: Any, out: str | Path) -> dict[str, Path]:
    """Write the report, the tables and the figures of a comparison into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "table": result.to_csv(out / "table.csv"),
        "summary": result.summary_to_csv(out / "summary.csv"),
    }
    result.to_json(out / "comparison.json")
    paths["json"] = out / "comparison.json"
    result.save_figures(out / "figures")
    paths["figures"] = out / "figures"
    paths["report"] = result.report(out / "report.html")
    return paths
