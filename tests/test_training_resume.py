"""Kill at any moment, resume, and end with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from attnviz.training import train

ROOT = Path(__file__).resolve().parents[1]

# 512 images / batch 16 = 32 steps per epoch: long enough to be killed inside one.
RECIPE = {
    "name": "tiny-eca",
    "base": "attnviz:small_resnet",
    "base_kwargs": {"num_classes": 4, "widths": [8, 16]},
    "attention": "eca",
    "input_size": [3, 32, 32],
    "train": {
        "train_images": 512,
        "val_images": 64,
        "image_size": 32,
        "batch_size": 16,
        "epochs": 2,
        "lr": 0.05,
        "flip": "both",
        "threads": 1,
        "visualize_every": 0,
    },
}
# 128 images (8 steps per epoch) and 3 epochs, for the tests that stop between epochs.
SMALL = {**RECIPE, "train": {**RECIPE["train"], "train_images": 128, "epochs": 3}}
QUIET = {"progress": False, "tensorboard": False}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    return train(RECIPE, out=tmp_path_factory.mktemp("reference"), **QUIET)


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    return train(SMALL, out=tmp_path_factory.mktemp("small-reference"), **QUIET)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny-eca.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    return path


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(reference, recipe_file, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "train.py"), "--recipe", str(recipe_file)]
    cmd += ["--out", str(out), "--no-progress", "--no-tensorboard"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pointer = out / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    try:
        while not pointer.exists():  # the first epoch's checkpoint is complete
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    run = json.loads((out / "run.json").read_text())
    assert not run["finished"] and not (out / "model.safetensors").exists()
    epoch = json.loads(pointer.read_text())["epoch"]
    assert epoch < 2, "the run finished before it could be killed"

    resumed = train(RECIPE, out=out, **QUIET)
    assert resumed.finished and resumed.resumed_from_epoch == epoch
    _assert_same_weights(resumed.checkpoint, reference.checkpoint)
    _assert_same_weights(resumed.best_checkpoint, reference.best_checkpoint)
    assert [r["val_acc"] for r in resumed.metrics["epochs"]] == [
        r["val_acc"] for r in reference.metrics["epochs"]
    ]


def test_stopping_between_epochs_and_resuming_gives_identical_weights(small_reference, tmp_path):
    first = train(SMALL, out=tmp_path, stop_after=1, **QUIET)
    assert not first.finished and not first.checkpoint.exists()
    rest = train(SMALL, out=tmp_path, **QUIET)
    assert rest.finished and rest.resumed_from_epoch == 1
    _assert_same_weights(rest.checkpoint, small_reference.checkpoint)


@pytest.mark.parametrize(
    "victim", ["epoch-0002.safetensors", "epoch-0002.optim.safetensors", "epoch-0002.state.json"]
)
def test_a_truncated_latest_checkpoint_is_detected_and_the_previous_one_used(
    small_reference, tmp_path, victim
):
    train(SMALL, out=tmp_path, stop_after=2, **QUIET)
    path = tmp_path / "checkpoints" / victim
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match=rf"{victim}.*\(resuming from epoch 1\)"):
        result = train(SMALL, out=tmp_path, **QUIET)
    assert result.finished and result.resumed_from_epoch == 1
    assert any(victim in w for w in result.warnings)
    _assert_same_weights(result.checkpoint, small_reference.checkpoint)


def test_a_corrupted_pointer_falls_back_to_the_newest_good_checkpoint(tmp_path):
    train(SMALL, out=tmp_path, stop_after=2, **QUIET)
    (tmp_path / "checkpoints" / "latest.json").write_text('{"epoch": 2, "sta')
    with pytest.warns(UserWarning, match=r"latest\.json: unusable pointer"):
        result = train(SMALL, out=tmp_path, stop_after=1, **QUIET)
    assert result.resumed_from_epoch == 2 and result.finished


def test_no_good_checkpoint_starts_over(tmp_path):
    train(SMALL, out=tmp_path, stop_after=1, **QUIET)
    victim = tmp_path / "checkpoints" / "epoch-0001.safetensors"
    victim.write_bytes(b"\0" * 10)
    with pytest.warns(UserWarning, match="epoch-0001.safetensors: checksum mismatch"):
        result = train(SMALL, out=tmp_path, stop_after=1, **QUIET)
    assert result.resumed_from_epoch is None and len(result.metrics["epochs"]) == 1


def test_ctrl_c_is_one_line_exit_130_and_the_same_command_resumes_to_identical_weights(
    small_reference, tmp_path, monkeypatch, capsys
):
    from attnviz.cli.train import main
    from attnviz.training.loop import Trainer

    recipe = tmp_path / "small.yaml"
    recipe.write_text(yaml.safe_dump(SMALL))
    argv = ["--recipe", str(recipe), "--out", str(tmp_path / "run"), "--no-tensorboard"]
    original, calls = Trainer._backward_step, []

    def step(self, loss):  # Ctrl-C in the 3rd step of epoch 2 (8 steps per epoch)
        calls.append(1)
        if len(calls) == 8 + 3:
            raise KeyboardInterrupt
        return original(self, loss)

    monkeypatch.setattr(Trainer, "_backward_step", step)
    assert main([*argv, "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "interrupted at epoch 2/3; rerun the same command to resume (from the checkpoint of "
        f"epoch 1 in {tmp_path / 'run'})"
    ]
    monkeypatch.undo()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"resuming {tmp_path / 'run'} from epoch 1/3" in err and "finished" in err
    _assert_same_weights(tmp_path / "run" / "model.safetensors", small_reference.checkpoint)


# Found by the 500-case fuzzer: a checkpoint's JSON is data, and a state of the wrong type must
# stop the resume with one error naming the file, not crash inside timm or torch an epoch later.
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s["scheduler"].update(t_initial=None),
            r"scheduler\.t_initial: expected a number",
        ),
        (lambda s: s["scheduler"].update(k_decay="1"), r"scheduler\.k_decay: expected a number"),
        (
            lambda s: s["optimizer"]["param_groups"][0].update(lr=None),
            r"param_groups\[0\]\.lr: expected a number",
        ),
        (
            lambda s: s["optimizer"]["param_groups"][0].update(momentum=float("inf")),
            r"param_groups\[0\]\.momentum: expected a number",
        ),
    ],
)
def test_a_checkpoint_state_of_the_wrong_type_is_refused_naming_the_file(tmp_path, edit, message):
    from attnviz.errors import TrainError

    train(SMALL, out=tmp_path, stop_after=1, **QUIET)
    path = tmp_path / "checkpoints" / "epoch-0001.state.json"
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state))
    with pytest.raises(TrainError, match=rf"epoch-0001\.state\.json: cannot restore.*{message}"):
        train(SMALL, out=tmp_path, **QUIET)
