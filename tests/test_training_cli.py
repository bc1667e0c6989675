"""``train.py`` / ``attnviz train``: bad input is one clear line on stderr, exit 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attnviz.cli.train import main

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "base": "attnviz:small_resnet",
    "base_kwargs": {"num_classes": 4, "widths": [8, 16]},
    "attention": "se",
    "input_size": [3, 32, 32],
    "train": {"train_images": 64, "val_images": 32, "image_size": 32, "batch_size": 16},
}


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _run(argv, capsys):
    """Exit status of ``main(argv)`` (argparse errors exit through SystemExit) and stderr."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _bad_recipe(tmp_path, **changes):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def _empty_folder(tmp_path):
    root = tmp_path / "images"
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing recipe", "recipe file not found"),
        ("unknown base", "unknown torchvision model 'resnet1888'"),
        ("unknown attention", "unknown attention 'sse'"),
        ("unknown recipe key", "unknown key 'attenton'"),
        ("unknown train key", "unknown key 'batchsize'"),
        ("empty data folder", "no images found"),
        ("missing data folder", "neither 'synthetic[:N]' nor an existing folder"),
        ("epochs 0", "--epochs: must be in [1, 10000], got 0"),
        ("epochs negative", "--epochs: must be in [1, 10000], got -3"),
        ("epochs absurd", "--epochs: must be in [1, 10000], got 20000"),
        ("unknown --set key", "unknown key 'lrate'"),
        ("bad --set value", "lr must be a number > 0.0"),
        ("unknown optimizer", "optimizer 'sgdd': Optimizer sgdd not found"),
        ("bad finetune", "invalid choice: 'head'"),
        ("fp16 on cpu", "fp16 needs a CUDA device"),
        ("class count", "has 2 classes but the model has 4 outputs"),
        ("one class", "has 1 class (a); training a classifier needs at least 2 classes"),
        ("num-classes disagree", "--num-classes 3 and --set base_kwargs.num_classes=5 disagree"),
        ("unknown dotted key", "unknown key 'base_kwarg.num_classes'; dotted keys start with"),
    ],
)
def test_bad_input_exits_2_with_a_clear_error_and_writes_nothing(
    case, message, recipe, tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["--recipe", recipe, "--out", out, "--no-progress"]
    if case == "missing recipe":
        args[1] = tmp_path / "nope.yaml"
    elif case == "unknown base":
        args[1] = _bad_recipe(tmp_path, base="torchvision:resnet1888")
    elif case == "unknown attention":
        args[1] = _bad_recipe(tmp_path, attention="sse")
    elif case == "unknown recipe key":
        args[1] = _bad_recipe(tmp_path, attenton="se")
    elif case == "unknown train key":
        args[1] = _bad_recipe(tmp_path, train={"batchsize": 3})
    elif case == "empty data folder":
        args += ["--data", _empty_folder(tmp_path)]
    elif case == "missing data folder":
        args += ["--data", tmp_path / "no-such-folder"]
    elif case.startswith("epochs"):
        args += ["--epochs", {"epochs 0": 0, "epochs negative": -3, "epochs absurd": 20000}[case]]
    elif case == "unknown --set key":
        args += ["--set", "lrate=0.1"]
    elif case == "bad --set value":
        args += ["--set", "lr=-1"]
    elif case == "unknown optimizer":
        args += ["--set", "opt=sgdd"]
    elif case == "bad finetune":
        args += ["--finetune", "head"]
    elif case == "fp16 on cpu":
        args += ["--set", "amp=fp16", "--device", "cpu"]
    elif case in ("class count", "one class"):
        root = tmp_path / "two"
        for split in ("train", "val"):
            for cls in ("a", "b") if case == "class count" else ("a",):
                (root / split / cls).mkdir(parents=True)
                _png(root / split / cls / "x.png")
        args += ["--data", root]
    elif case == "num-classes disagree":
        args += ["--num-classes", "3", "--set", "base_kwargs.num_classes=5"]
    elif case == "unknown dotted key":
        args += ["--set", "base_kwarg.num_classes=3"]
    before = sorted(p for p in tmp_path.rglob("*"))
    code, err = _run(args, capsys)
    assert code == 2, err
    assert message in err, err
    assert not out.exists()
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert "Traceback" not in err


def _png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


def test_train_py_end_to_end_bad_input_and_help(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "train.py"), "--recipe", str(tmp_path / "missing.yaml")]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: recipe file not found")
    assert not (tmp_path / "out").exists()


def test_attnviz_train_subcommand_trains(recipe, tmp_path, capsys):
    from attnviz.cli import main as attnviz_main

    out = tmp_path / "run"
    common = ["--recipe", str(recipe), "--out", str(out), "--epochs", "1", "--no-tensorboard"]
    common += ["--set", "threads=1", "--set", "flip=none"]
    code = attnviz_main(["train", *common])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "epoch 1/1" in err and "finished: val acc" in err
    assert (out / "model.safetensors").is_file()
    # Same arguments again: the finished run is returned at once.
    assert main([*common, "--no-progress"]) == 0


@pytest.mark.parametrize("case", ["file in the way", "out is a file", "system folder"])
def test_an_out_that_cannot_be_written_is_one_line_before_any_work(
    case, recipe, tmp_path, capsys, monkeypatch
):
    def no_work(*args, **kwargs):
        raise AssertionError("the model was built before --out was checked")

    monkeypatch.setattr("attnviz.training.plan.build_model", no_work)
    (tmp_path / "file.png").write_bytes(b"not a folder")
    out, message = {
        "file in the way": (tmp_path / "file.png" / "run", "file.png' is a file, not a folder"),
        "out is a file": (tmp_path / "file.png", "exists and is a file, not a folder"),
        "system folder": (Path("/proc/x"), "out '/proc/x': cannot create '/proc/x'"),
    }[case]
    if case == "system folder" and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    before = sorted(tmp_path.rglob("*"))
    code, err = _run(["--recipe", recipe, "--out", out, "--no-progress"], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert err.startswith(f"error: out {str(out)!r}: "), err
    assert sorted(tmp_path.rglob("*")) == before


def test_num_classes_fits_the_model_to_a_folder_and_is_part_of_the_run(recipe, tmp_path, capsys):
    import attnviz

    root = tmp_path / "three"
    for split in ("train", "val"):
        for cls in ("a", "b", "c"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                _png(root / split / cls / f"{i}.png")
    out = tmp_path / "run"
    common = ["--recipe", recipe, "--data", root, "--out", out, "--epochs", "1", "--no-tensorboard"]
    common += ["--set", "batch_size=3", "--set", "threads=1"]
    code, err = _run([*common, "--num-classes", "3"], capsys)
    assert code == 0, err
    assert "3 classes: a, b, c" in err and "finished: val acc" in err
    assert attnviz.load(out / "model.safetensors").fc.out_features == 3
    code, err = _run([*common, "--set", "base_kwargs.num_classes=3"], capsys)  # the same run
    assert code == 0 and "finished: val acc" in err and "epoch 1/1" not in err, err
    code, err = _run([*common, "--num-classes", "2", "--fresh"], capsys)
    assert code == 2 and "has 3 classes but the model has 2 outputs" in err, err
    assert "pass --num-classes 3" in err
