"""The HTML report opens in a real headless Chromium: no console errors, not blank."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from attnviz import insert_attention
from attnviz.analysis import compare
from attnviz.data import SyntheticShapes
from attnviz.nets import small_resnet

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (.ci/run installs it)"
)

ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_report_loads_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    torch.manual_seed(0)
    base = small_resnet(10, widths=(8, 16, 32))
    models = {
        "base": base,
        "eca": insert_attention(base, "eca", example_input=torch.randn(1, 3, 32, 32)),
    }
    result = compare(
        models,
        SyntheticShapes(16, size=32, split="val"),
        faithfulness=False,
        panels=3,
        progress=False,
    )
    report = result.report(tmp_path / "report.html")

    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(report.as_uri(), wait_until="load")
        loaded = page.evaluate(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        n_images = page.evaluate("document.images.length")
        shot = page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        browser.close()
    assert errors == []
    assert loaded and n_images == len(result.figures())
    from io import BytesIO

    from PIL import Image

    pixels = np.asarray(Image.open(BytesIO(shot)).convert("L"), dtype=float)
    assert pixels.std() > 10  # text, tables and figures, not a blank page
