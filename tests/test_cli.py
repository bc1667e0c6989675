"""The attnviz command line: every subcommand runs, bad input gives exit code 2 and a clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from attnviz.cli import main

RECIPE = """
name: {name}
base: attnviz:small_resnet
base_kwargs: {{num_classes: 10, widths: [8, 16, 32], stem_stride: 2}}
attention: {attention}
input_size: [3, 32, 32]
"""


@pytest.fixture
def recipes(tmp_path):
    paths = []
    for name, attention in (("tiny", "none"), ("tiny-eca", "eca")):
        p = tmp_path / f"{name}.yaml"
        p.write_text(RECIPE.format(name=name, attention=attention))
        paths.append(str(p))
    return paths


@pytest.fixture
def image(tmp_path):
    from attnviz.data import SyntheticShapes

    arr = SyntheticShapes(1, size=32, split="val").render(0)[0]
    path = tmp_path / "shape.png"
    Image.fromarray(arr).save(path)
    return str(path)


def test_help_lists_every_command(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for cmd in ("surgery", "layers", "cam", "compare"):
        assert cmd in out
    with pytest.raises(SystemExit) as exit_:
        main(["cam", "--help"])
    assert exit_.value.code == 0 and "--method" in capsys.readouterr().out


def test_surgery_and_layers(recipes, capsys):
    assert main(["surgery", recipes[1]]) == 0
    out = capsys.readouterr().out
    assert "eca (init=default, where=residual" in out and "layer1.0.attn" in out and "+" in out
    assert main(["layers", recipes[1], "--filter", "layer*.?.attn.gate"]) == 0
    assert capsys.readouterr().out.count(".attn.gate") == 3


def test_cam_writes_a_png(recipes, image, tmp_path, capsys):
    out = tmp_path / "cam.png"
    assert (
        main(
            [
                "cam",
                "--model",
                recipes[1],
                "--image",
                image,
                "--method",
                "gradcam",
                "layercam",
                "--target",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "gradcam, layercam at layer3" in capsys.readouterr().out
    pixels = np.asarray(Image.open(out).convert("L"), dtype=float)
    assert pixels.shape[1] > 400 and pixels.std() > 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["cam", "--model", "nope.yaml", "--image", "x.png", "--out", "o.png"],
            "recipe file not found",
        ),
        (
            ["cam", "--model", "torchvision:resnet18", "--image", "missing.png", "--out", "o.png"],
            "no such file or folder",
        ),
        (
            ["cam", "--model", "torchvision:resnet81", "--image", "x.png", "--out", "o.png"],
            "closest valid: ['resnet18'",
        ),
    ],
)
def test_cam_bad_input(argv, message, capsys, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_cam_bad_method_and_target(recipes, image, tmp_path, capsys):
    assert (
        main(
            [
                "cam",
                "--model",
                recipes[0],
                "--image",
                image,
                "--method",
                "gradcma",
                "--out",
                str(tmp_path / "o.png"),
            ]
        )
        == 2
    )
    assert "closest valid: ['gradcam'" in capsys.readouterr().err
    assert (
        main(
            [
                "cam",
                "--model",
                recipes[0],
                "--image",
                image,
                "--target",
                "10",
                "--out",
                str(tmp_path / "o.png"),
            ]
        )
        == 2
    )
    assert "out of range: the model has 10 classes" in capsys.readouterr().err


def test_compare_writes_report_and_tables(recipes, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                *recipes,
                "--data",
                "synthetic:24",
                "--out",
                str(out),
                "--faithfulness-images",
                "8",
                "--batch-size",
                "12",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "tiny-eca" in text and "report:" in text
    for name in (
        "report.html",
        "summary.csv",
        "table.csv",
        "comparison.json",
        "figures/cam_panels.png",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "comparison.json").read_text())["models"] == ["tiny", "tiny-eca"]


def test_compare_bad_input(recipes, tmp_path, capsys):
    assert (
        main(
            ["compare", *recipes, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "no such folder" in capsys.readouterr().err
    assert (
        main(
            [
                "compare",
                *recipes,
                "--data",
                "synthetic:8",
                "--names",
                "a",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "--names has 1 entries for 2 models" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
