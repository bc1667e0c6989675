"""The bad-input catalogue: each kind of bad input, the one line it gets, nothing written.

Every case runs the command line in-process from an empty folder; the command must exit
with 2, print exactly one line on stderr (no traceback, no usage block), say the given
fragment, and leave the folder as it was (apart from the inputs the case itself made).
Add a case here for every user mistake found: the catalogue is meant to grow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from PIL import Image

import attnviz
from attnviz.cli import main

TINY = {
    "base": "attnviz:small_resnet",
    "base_kwargs": {"num_classes": 4, "widths": [4, 8], "depths": [1, 1]},
    "attention": "se",
    "input_size": [3, 32, 32],
    "train": {"train_images": 16, "val_images": 8, "batch_size": 8, "image_size": 32},
}


def _inputs(folder: Path) -> None:
    """The files the cases refer to."""
    (folder / "r.yaml").write_text(yaml.safe_dump(TINY))
    (folder / "bad.yaml").write_text("base: [unclosed")
    (folder / "typo.yaml").write_text(yaml.safe_dump({**TINY, "atention": "se"}))
    Image.new("RGB", (20, 20), (120, 30, 200)).save(folder / "img.png")
    (folder / "notimage.png").write_bytes(b"not a png")
    (folder / "notweights.safetensors").write_bytes(b"garbage")
    for split in ("train", "val"):
        (folder / "one_class" / split / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "one_class" / split / "a" / "1.png")
    (folder / "grid.yaml").write_text(yaml.safe_dump({"recipes": ["r.yaml"], "attention": ["sex"]}))
    (folder / "file.png").write_bytes(b"x")
    model = attnviz.create_model(
        "attnviz:small_resnet", num_classes=4, widths=[4, 8], depths=[1, 1]
    )
    attnviz.save(model, folder / "m.safetensors")
    attnviz.save(
        attnviz.create_model("attnviz:small_resnet", num_classes=6, widths=[4, 8], depths=[1, 1]),
        folder / "six.safetensors",
    )


CASES = {
    # -- models and references
    "unknown torchvision model": (
        ["surgery", "torchvision:resnet81"],
        "closest valid: ['resnet18'",
    ),
    "unknown shipped recipe": (["surgery", "small-resnet-sx"], "'small-resnet-se'"),
    "missing run folder": (["layers", "runs/base"], "no such file or folder"),
    "recipe with a typo": (["surgery", "typo.yaml"], "unknown key 'atention'"),
    "recipe that is not YAML": (["surgery", "bad.yaml"], "not valid YAML"),
    "not a safetensors file": (["layers", "notweights.safetensors"], "not a readable safetensors"),
    "unknown attention": (["surgery", "r.yaml", "--attention", "sx"], "unknown attention 'sx'"),
    "unknown where selector": (
        ["surgery", "r.yaml", "--attention", "se", "--where", "layer9"],
        "site selector",
    ),
    "--pretrained with a recipe": (
        ["cam", "--model", "r.yaml", "--pretrained", "--image", "img.png", "--out", "o.png"],
        "carries its own weights",
    ),
    # -- cam
    "image not found": (
        ["cam", "--model", "r.yaml", "--image", "nope.png", "--out", "o.png"],
        "no such file or folder",
    ),
    "unreadable image": (
        ["cam", "--model", "r.yaml", "--image", "notimage.png", "--out", "o.png"],
        "cannot read image",
    ),
    "unknown output format": (
        ["cam", "--model", "r.yaml", "--image", "img.png", "--out", "o.jpgx"],
        "cannot write a .jpgx image",
    ),
    "unknown cam method": (
        ["cam", "--model", "r.yaml", "--image", "img.png", "--method", "gradcma", "--out", "o.png"],
        "closest valid: ['gradcam'",
    ),
    "class index out of range": (
        ["cam", "--model", "r.yaml", "--image", "img.png", "--target", "9", "--out", "o.png"],
        "out of range: the model has 4 classes",
    ),
    "unknown class name": (
        ["cam", "--model", "r.yaml", "--image", "img.png", "--target", "dog", "--out", "o.png"],
        "unknown class 'dog'",
    ),
    "unknown layer": (
        ["cam", "--model", "r.yaml", "--image", "img.png", "--layer", "layer9", "--out", "o.png"],
        "attnviz layers MODEL",
    ),
    "alpha out of range": (
        ["cam", "--model", "r.yaml", "--image", "img.png", "--alpha", "2", "--out", "o.png"],
        "--alpha must be in (0, 1]",
    ),
    # -- compare
    "models of different class counts": (
        [
            "compare",
            "m.safetensors",
            "six.safetensors",
            "--names",
            "a",
            "b",
            "--data",
            "synthetic:4",
            "--out",
            "cmp",
        ],
        "different shapes",
    ),
    "--names count": (
        [
            "compare",
            "m.safetensors",
            "m.safetensors",
            "--names",
            "a",
            "--data",
            "synthetic:4",
            "--out",
            "cmp",
        ],
        "--names has 1 entries for 2 models",
    ),
    "same names": (
        ["compare", "m.safetensors", "m.safetensors", "--data", "synthetic:4", "--out", "cmp"],
        "must be distinct",
    ),
    "unknown dataset name": (
        [
            "compare",
            "m.safetensors",
            "m.safetensors",
            "--names",
            "a",
            "b",
            "--data",
            "oxford-pet:x",
            "--out",
            "cmp",
        ],
        "oxford-pets",
    ),
    "an --out that cannot be written": (
        [
            "compare",
            "m.safetensors",
            "m.safetensors",
            "--names",
            "a",
            "b",
            "--data",
            "synthetic:4",
            "--out",
            "file.png/x",
        ],
        "--out",
    ),
    # -- train
    "negative epochs": (
        ["train", "--recipe", "r.yaml", "--epochs", "-1", "--out", "run"],
        "must be in [1, 10000]",
    ),
    "unknown --set key": (
        ["train", "--recipe", "r.yaml", "--set", "lrr=0.1", "--out", "run"],
        "unknown key 'lrr'",
    ),
    "one-class folder": (
        ["train", "--recipe", "r.yaml", "--data", "one_class", "--out", "run"],
        "at least 2 classes",
    ),
    "train --out under a file": (
        ["train", "--recipe", "r.yaml", "--out", "file.png/run"],
        "file.png",
    ),
    # -- ablate
    "unknown attention in a grid": (["ablate", "grid.yaml", "--out", "abl"], "closest valid"),
    "unknown launcher": (["ablate", "grid.yaml", "--out", "abl", "--launcher", "rey"], "ray"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_line_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    argv, fragment = CASES[case]
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    before = {p for p in tmp_path.rglob("*")}
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors (one line too: see cli._common.Parser)
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    assert {p for p in tmp_path.rglob("*")} == before, sorted(
        map(str, {p for p in tmp_path.rglob("*")} - before)
    )


def test_the_catalogue_names_real_commands():
    from attnviz.cli import COMMANDS

    assert {argv[0] for argv, _ in CASES.values()} <= set(COMMANDS)
    json.dumps(CASES)
    assert os.sep  # the cases use relative paths only
