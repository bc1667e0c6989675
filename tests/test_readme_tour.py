"""The README's tour runs as written, in order, on a fresh folder (with tiny settings added).

Each command of the tour's code block runs through ``attnviz.cli.main`` in an empty folder that
holds only a copy of ``models/``, so a command that needs an earlier one's output (``cam`` and
``compare`` read the runs that ``train`` wrote) fails here if the tour's order is wrong. Only
sizes are added (one short epoch, a few images); no command or path of the tour is changed.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from attnviz.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

#: Per command: flags that make it tiny (appended; nothing of the tour is replaced).
TINY = {
    "surgery": [],
    "layers": [],
    "train": [
        "--epochs=1",
        "--set=train_images=96",
        "--set=val_images=32",
        "--no-progress",
        "--no-tensorboard",
    ],
    "cam": [],
    "compare": ["--images=24", "--faithfulness-images=4", "--bootstrap-replicates=50"],
    "ablate": [],
    "demo": ["--quick"],
}
SLOW = {"ablate", "demo"}


def tour() -> list[list[str]]:
    section = README.split("## A tour", 1)[1]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[:1]
    commands = []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            assert argv[0] == "attnviz", line
            commands.append(argv[1:])
    return commands


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "models", tmp_path / "models")
    grid = tmp_path / "models" / "ablation-small.yaml"
    data = yaml.safe_load(grid.read_text())
    data.update(
        attention=["none", "se"],
        block_kwargs={"se": [{"rd_ratio": 0.25}]},
        seeds=[0],
        train={"epochs": 1, "train_images": 64, "val_images": 32},
        eval={"images": 32, "faithfulness_images": 4, "cam_method": "gradcam"},
    )
    grid.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(argv: list[str], capsys) -> str:
    rc = main([*argv, *TINY[argv[0]]])
    out, err = capsys.readouterr()
    assert rc == 0, f"attnviz {shlex.join(argv)} exited {rc}: {err.strip()}"
    return out


def test_the_tour_lists_every_command():
    assert [argv[0] for argv in tour()] == [
        "surgery",
        "layers",
        "train",
        "train",
        "cam",
        "compare",
        "ablate",
        "demo",
    ]


def test_the_tour_runs_in_order_on_a_fresh_folder(fresh, capsys):
    outputs = [_run(argv, capsys) for argv in tour() if argv[0] not in SLOW]
    assert "parameters: base" in outputs[0]
    assert "attn.gate" in outputs[1]
    assert (fresh / "runs" / "base" / "model.safetensors").is_file()
    assert (fresh / "runs" / "se" / "model.safetensors").is_file()
    assert (fresh / "cam.png").stat().st_size > 10_000
    assert (fresh / "runs" / "compare" / "report.html").is_file()


@pytest.mark.slow
def test_the_whole_tour_runs_in_order_on_a_fresh_folder(fresh, capsys):
    for argv in tour():
        _run(argv, capsys)
    assert (fresh / "runs" / "ablation" / "summary.md").is_file()
    assert (fresh / "runs" / "demo" / "report.html").is_file()
