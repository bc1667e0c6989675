"""One input contract per model: recorded with the weights, restored by load, used by every consumer."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

import attnviz
from attnviz.errors import DataError, FileFormatError, InputContractError
from attnviz.inputs import InputContract, attach_contract, common_contract, input_contract


def _tiny(num_classes=3):
    return attnviz.create_model(
        "attnviz:small_resnet", num_classes=num_classes, widths=[4, 8], depths=[1, 1]
    )


def test_create_model_records_what_the_weights_expect():
    tv = input_contract(attnviz.create_model("torchvision:resnet18"))
    assert tv.weights == "random initialisation" and tv.random_weights
    timm = input_contract(attnviz.create_model("timm:resnet18"))
    assert timm.crop_pct == pytest.approx(0.95)  # timm's own pretrained_cfg
    net = input_contract(_tiny(4))
    assert net.size == (64, 64) and net.resize == "stretch"
    assert net.class_names == ["disk", "square", "triangle", "cross"]


def test_the_contract_survives_surgery_save_and_load(tmp_path):
    model = attach_contract(
        _tiny(),
        InputContract(
            size=(96, 96), class_names=["a", "b", "c"], resize="stretch", weights="trained on x"
        ),
    )
    se = attnviz.insert_attention(model, "se", example_input=torch.randn(1, 3, 32, 32))
    path = attnviz.save(se, tmp_path / "m.safetensors")
    loaded = input_contract(attnviz.load(path))
    assert loaded.size == (96, 96) and loaded.class_names == ["a", "b", "c"]
    assert loaded.weights == "trained on x" and str(path) in loaded.source


def test_a_run_folder_keeps_its_size_and_class_names(tmp_path):
    """Issue 11.1: a model trained at 32 px on 4 classes must not come back as 224 px unnamed."""
    from attnviz.recipes import load_model

    contract = input_contract(load_model("tests/data/v0.1/run"))
    assert contract.size == (32, 32) and len(contract.class_names) == 4


def test_a_bad_recorded_contract_is_a_format_error(tmp_path):
    from tests.test_trust import _rewrite

    path = attnviz.save(attach_contract(_tiny(), InputContract()), tmp_path / "m.safetensors")

    def edit(spec):
        spec["extra"]["input"]["std"] = [0.0, 0.0, 0.0]

    bad = _rewrite(path, tmp_path / "bad.safetensors", edit)
    with pytest.raises(FileFormatError, match="std > 0"):
        attnviz.load(bad)


def test_models_whose_trained_inputs_disagree_cannot_be_compared():
    a = InputContract(size=(96, 96), weights="trained")
    b = InputContract(size=(224, 224), weights="trained")
    with pytest.raises(InputContractError, match=r"size \[96, 96\] vs \[224, 224\].*--size"):
        common_contract({"a": a, "b": b})
    assert common_contract({"a": a, "b": b}, size=(64, 64)).size == (64, 64)
    # a random model has no facts to disagree about
    assert common_contract({"a": a, "r": InputContract(weights="random initialisation")}) == a
    with pytest.raises(InputContractError, match="mean"):
        common_contract({"a": a, "c": InputContract(size=(96, 96), mean=(0.5,) * 3, weights="t")})


def test_compare_refuses_models_with_different_class_counts():
    """Issue 11.3: 3 vs 1000 classes gave accuracy 0.0 and a CKA without a word."""
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,)))
    with pytest.raises(InputContractError, match=r"outputs of different shapes.*\(3,\).*\(5,\)"):
        attnviz.compare({"a": _tiny(3), "b": _tiny(5)}, data, progress=False, faithfulness=False)


def test_compare_refuses_labels_the_models_cannot_have():
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 9, 2]))
    with pytest.raises(DataError, match="labels up to 9 but the models have 3 outputs"):
        attnviz.compare({"a": _tiny(3)}, data, progress=False, faithfulness=False)


def test_compare_records_the_inputs_it_ran_on(tmp_path):
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,)))
    result = attnviz.compare(
        {"a": _tiny(3)}, data, progress=False, faithfulness=False, data_source="tensors"
    )
    inputs = result.to_json()["inputs"]
    assert inputs["data"] == "tensors" and inputs["image_size"] == [32, 32]
    assert inputs["models"]["a"]["weights"] == "random initialisation"
    json.dumps(inputs)


# Found by the 500-case fuzzer (a saved model's metadata with "crop_pct": [0.875] raised a
# TypeError from float()): every field of a contract read from a file is checked by type.
@pytest.mark.parametrize(
    "fields",
    [
        {"crop_pct": [0.875]},
        {"crop_pct": "0.9x"},
        {"mean": [[0.5], 0.5, 0.5]},
        {"size": {"h": 64}},
        {"class_names": "disk"},
        {"resize": ["crop"]},
    ],
)
def test_a_contract_of_the_wrong_types_is_one_file_format_error(fields):
    data = {**InputContract().to_json(), **fields}
    with pytest.raises(FileFormatError, match=r"model\.json: not a valid input contract"):
        InputContract.from_json(data, source="model.json")
