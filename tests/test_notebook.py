"""examples/quickstart.ipynb runs headless (nbclient) and shows rich outputs (issue 14.2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_the_quickstart_runs_and_displays_its_results(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    seconds = time.perf_counter() - start
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    # the surgery summary, the CAM result (with its overlay grid) and the comparison
    assert any("attention blocks" in h for h in html)
    assert any("data:image/png;base64" in h and "gradcam" in h for h in html)
    assert any("each variant" in h or "Holm" in h for h in html)
    assert (tmp_path / "runs" / "quickstart" / "se" / "model.safetensors").is_file()
    print(f"quickstart executed in {seconds:.0f} s")
