"""The installed package is whole: a wheel, installed outside the checkout, runs the demo and
finds the shipped recipes and grids by name (issue 14.1).

The wheel is built from this checkout, installed with ``pip install --no-deps --target`` (it
reuses the torch of the running environment) and run from an empty folder with only that
folder on ``PYTHONPATH``, so neither the checkout nor the editable install can stand in for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    import shutil

    wheels = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "attnviz"  # a copy: never the checkout's build/
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info"),
    )
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(wheels), str(source)], check=True, capture_output=True)
    (wheel,) = wheels.glob("attnviz-*.whl")
    target = tmp_path_factory.mktemp("site")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True)
    return wheel, target


def _run(target: Path, cwd: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "attnviz", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_installed_package_is_whole_and_runs_from_any_folder(installed, tmp_path):
    """One test (one wheel build: parallel builds of one tree would share its build/)."""
    wheel, target = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in (ROOT / "models").glob("*.yaml"):
        assert f"attnviz/models/{recipe.name}" in names, recipe.name
    assert "attnviz/py.typed" in names
    where = _run(target, tmp_path, "surgery", "small-resnet-se")
    assert where.returncode == 0, where.stderr[-2000:]
    assert "layer1.0.attn" in where.stdout and "parameters: base" in where.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import attnviz.recipes as r; print(r.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
    )
    assert probe.stdout.startswith(str(target)), probe.stdout  # not the checkout
    demo = _run(target, tmp_path, "demo", "--quick", "--out", "demo")
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (tmp_path / "demo" / "report.html").is_file()
    assert "small-resnet-cbam" in demo.stdout
