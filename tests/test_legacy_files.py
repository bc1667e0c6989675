"""Files written by attnviz 0.1.0 (kept under tests/data/v0.1) still load, bit for bit.

They were written by the code of that version before any reader gained a schema or
a trust boundary (``tests/data/v0.1``: a saved model with SE, a spatial CBAM placed by
module type and a recorded input contract; an ECA model at every convolution; a
two-epoch run folder with its checkpoints; an ablation cell's result).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

import attnviz
from attnviz.fileformats import read_json
from attnviz.recipes import load_model
from attnviz.training.checkpoint import find_checkpoint

DATA = Path(__file__).parent / "data" / "v0.1"


def test_a_saved_model_loads_and_computes_what_it_did():
    model = attnviz.load(DATA / "model.safetensors").eval()
    io = load_file(str(DATA / "model_io.safetensors"))
    with torch.no_grad():
        assert torch.equal(model(io["x"]), io["y"])
    spec = attnviz.surgery_spec(model)
    assert [i["attention"] for i in spec["insertions"]] == ["se", "cbam_spatial"]
    assert spec["extra"]["data"]["class_names"] == ["a", "b", "c", "d"]


def test_a_model_with_a_block_at_every_convolution_loads():
    model = attnviz.load(DATA / "eca_conv.safetensors")
    assert len(attnviz.attention_modules(model)) == len(
        attnviz.read_spec(DATA / "eca_conv.safetensors")["insertions"][0]["sites"]
    )


def test_a_run_folder_loads_and_its_files_validate():
    model = load_model(DATA / "run")
    assert attnviz.surgery_spec(model)["insertions"][0]["attention"] == "se"
    read_json(DATA / "run" / "run.json", "run record")
    read_json(DATA / "run" / "metrics.json", "run metrics")
    ckpt, problems = find_checkpoint(DATA / "run" / "checkpoints", warn=False)
    assert ckpt is not None and ckpt.epoch == 2 and not problems


def test_a_finished_run_of_the_old_version_is_recognised_as_finished(tmp_path):
    from attnviz.training import train

    run = tmp_path / "run"
    shutil.copytree(DATA / "run", run)
    identity = read_json(run / "run.json", "run record")["identity"]
    settings = {
        k: identity["settings"][k]
        for k in ("train_images", "val_images", "batch_size", "image_size")
    }
    result = train(
        identity["recipe"],
        out=run,
        epochs=2,
        progress=False,
        tensorboard=False,
        overrides={**settings, "keep_checkpoints": 2},
    )
    assert result.finished and result.resumed_from_epoch == 2
    reference = attnviz.load(DATA / "run" / "model.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(result.model.eval()(x), reference.eval()(x))


def test_an_ablation_result_of_the_old_version_validates():
    record = read_json(DATA / "ablation_result.json", "ablation cell result")
    assert record["metrics"]["accuracy"] is not None
