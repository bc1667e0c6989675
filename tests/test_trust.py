"""Files are data: every path from a file to an import or to generated code is closed.

Each vector is a crafted file whose payload would create a sentinel file (or import a
package whose import creates one). The readers must refuse it with the documented error,
before anything is imported, and the sentinel must not exist afterwards.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.fx as fx
from safetensors.torch import load_file, save_file
from torch import nn

import attnviz
from attnviz import FileFormatError, UntrustedCodeError
from attnviz.cli import main as cli_main
from attnviz.errors import AttnvizError, TraceError, TrainError, UnknownNameError


def _tiny(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    base = attnviz.create_model(
        "attnviz:small_resnet", num_classes=num_classes, widths=[4, 8], depths=[1, 1]
    )
    return attnviz.insert_attention(base, "se", "residual", example_input=torch.randn(1, 3, 16, 16))


@pytest.fixture
def saved(tmp_path) -> Path:
    return attnviz.save(_tiny(), tmp_path / "good.safetensors")


def _rewrite(path: Path, out: Path, edit) -> Path:
    """Copy a saved model with its spec edited by ``edit(spec)`` (tensors unchanged)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        spec = json.loads(f.metadata()["attnviz_spec"])
    result = edit(spec)
    spec = spec if result is None else result
    text = spec if isinstance(spec, str) else json.dumps(spec)
    save_file(load_file(str(path)), str(out), metadata={"attnviz_spec": text})
    return out


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A package whose import (and whose every callable) creates a sentinel file."""
    root = tmp_path / "site"
    (root / "evilpkg").mkdir(parents=True)
    sentinel = tmp_path / "PWNED"
    (root / "evilpkg" / "__init__.py").write_text(
        textwrap.dedent(
            f"""
            import pathlib
            pathlib.Path({str(sentinel)!r}).touch()

            def factory(**kwargs):
                pathlib.Path({str(sentinel)!r}).touch()

            class Act:
                def __init__(self, *a, **k):
                    pathlib.Path({str(sentinel)!r}).touch()
            """
        )
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "evilpkg", raising=False)
    yield sentinel
    sys.modules.pop("evilpkg", None)


def _untouched(sentinel: Path) -> bool:
    return not sentinel.exists() and "evilpkg" not in sys.modules


# -- the base model reference -----------------------------------------------------------
@pytest.mark.parametrize(
    "base",
    [
        {"ref": "os:system", "kwargs": {"command": "touch PWNED"}},
        {"ref": "subprocess:getoutput", "kwargs": {"cmd": "touch PWNED"}},
        {"ref": "evilpkg:factory", "kwargs": {}},
        {"ref": "builtins:eval", "kwargs": {}},
    ],
)
def test_a_base_reference_naming_code_is_refused_before_anything_is_imported(
    saved, tmp_path, evil, monkeypatch, base
):
    monkeypatch.chdir(tmp_path)
    crafted = _rewrite(saved, tmp_path / "crafted.safetensors", lambda s: s.update(base=base))
    with pytest.raises(UntrustedCodeError, match=r"crafted\.safetensors.*base=.*trust_code=True"):
        attnviz.load(crafted)
    assert _untouched(evil) and not (tmp_path / "PWNED").exists()


def test_base_kwargs_that_load_other_files_are_refused(saved, tmp_path):
    def edit(spec):
        spec["base"] = {"ref": "timm:resnet18", "kwargs": {"pretrained_cfg_overlay": {"file": "x"}}}

    crafted = _rewrite(saved, tmp_path / "c.safetensors", edit)
    with pytest.raises(UntrustedCodeError, match="pretrained_cfg_overlay"):
        attnviz.load(crafted)


# -- classes named in block kwargs and where= --------------------------------------------
def test_a_class_outside_the_allowlist_in_block_kwargs_is_refused_before_import(
    saved, tmp_path, evil
):
    def edit(spec):
        spec["insertions"][0]["kwargs"] = {"act_layer": {"__callable__": "evilpkg:Act"}}

    crafted = _rewrite(saved, tmp_path / "c.safetensors", edit)
    with pytest.raises(UntrustedCodeError, match=r"evilpkg:Act.*allowlist"):
        attnviz.load(crafted)
    assert _untouched(evil)


def test_an_allowlisted_class_in_block_kwargs_loads(tmp_path):
    base = attnviz.create_model("attnviz:small_resnet", num_classes=3, widths=[4, 8], depths=[1, 1])
    model = attnviz.insert_attention(base, "se", "residual", act_layer=nn.GELU).eval()
    path = attnviz.save(model, tmp_path / "gelu.safetensors")
    assert attnviz.read_spec(path)["insertions"][0]["kwargs"]["act_layer"] == {
        "__callable__": "torch.nn.modules.activation:GELU"
    }
    loaded = attnviz.load(path).eval()
    x = torch.randn(2, 3, 16, 16)
    assert isinstance(loaded.layer1[0].attn.act, nn.GELU)
    assert torch.equal(loaded(x), model(x))


def test_a_function_outside_torch_nn_is_refused_even_from_an_allowed_package(saved, tmp_path):
    def edit(spec):  # a torch.nn function that registers a global hook: not a class
        target = "torch.nn.modules.module:register_module_forward_hook"
        spec["insertions"][0]["kwargs"] = {"act_layer": {"__callable__": target}}

    crafted = _rewrite(saved, tmp_path / "c.safetensors", edit)
    with pytest.raises(UntrustedCodeError, match=r"not an nn\.Module class"):
        attnviz.load(crafted)


def test_a_where_type_in_a_file_is_never_imported(saved, tmp_path, evil):
    def edit(spec):
        spec["insertions"][0]["where"] = {"__callable__": "evilpkg:Act"}

    crafted = _rewrite(saved, tmp_path / "c.safetensors", edit)
    attnviz.load(crafted)  # where= is a record of the call: the sites are replayed, not it
    assert _untouched(evil)


def test_an_unregistered_block_says_which_register_call_is_missing(saved, tmp_path):
    def edit(spec):
        spec["insertions"][0]["attention"] = "my_block"

    crafted = _rewrite(saved, tmp_path / "c.safetensors", edit)
    with pytest.raises(UnknownNameError, match=r"register_attention\('my_block'"):
        attnviz.load(crafted)


# -- names that reach generated code -----------------------------------------------------
BREAKOUT = 'attn"); __import__("pathlib").Path("PWNED").touch(); ("'


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attr", BREAKOUT),
        ("owner", 'layer1.0"\nimport os'),
        ("local", "bn2\n__import__('os')"),
        ("site", "layer1.0.bn2'); x = ('"),
    ],
)
def test_site_names_crafted_to_break_out_of_generated_code_are_refused(
    saved, tmp_path, monkeypatch, field, value
):
    monkeypatch.chdir(tmp_path)

    def edit(spec):
        spec["insertions"][0]["sites"][0][field] = value

    crafted = _rewrite(saved, tmp_path / "c.safetensors", edit)
    with pytest.raises(FileFormatError, match=rf"field insertions\[0\]\.sites\[0\]\.{field}"):
        attnviz.load(crafted)
    assert not (tmp_path / "PWNED").exists()


def test_a_site_attribute_that_exists_on_the_owner_is_refused(saved, tmp_path):
    def edit(spec):
        spec["insertions"][0]["sites"][0]["attr"] = "forward"

    crafted = _rewrite(saved, tmp_path / "c.safetensors", edit)
    with pytest.raises(FileFormatError, match="does not match the weights"):
        attnviz.load(crafted)  # the architecture check sees it first
    base = attnviz.remove_attention(_tiny())
    with pytest.raises(AttnvizError, match="already has an attribute 'forward'"):
        attnviz.load(crafted, base=base)  # and the site check, when the base is given


def test_the_code_generator_refuses_targets_that_are_not_names(tmp_path, monkeypatch):
    """Defence in depth: even a graph built by hand cannot smuggle code through a target."""
    from attnviz._tracing import compile_graph

    monkeypatch.chdir(tmp_path)
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_module(BREAKOUT, (x,)))
    with pytest.raises(TraceError, match="not a module path"):
        compile_graph(graph)
    assert not (tmp_path / "PWNED").exists()


# -- absurd sizes ------------------------------------------------------------------------
def test_oversized_metadata_is_refused(saved, tmp_path):
    crafted = _rewrite(saved, tmp_path / "c.safetensors", lambda s: " " * (17 << 20) + "{}")
    with pytest.raises(FileFormatError, match="bytes"):
        attnviz.load(crafted)


def test_a_spec_claiming_a_huge_model_fails_on_the_meta_device_first(saved, tmp_path):
    def edit(spec):
        spec["base"]["kwargs"]["num_classes"] = 10**9  # a 4-GB classifier, if it were built

    crafted = _rewrite(saved, tmp_path / "c.safetensors", edit)
    with pytest.raises(FileFormatError, match="does not match the weights in the file"):
        attnviz.load(crafted)


def test_a_million_insertions_and_bad_types_are_format_errors(saved, tmp_path):
    site = {"site": "a", "owner": "", "local": "", "attr": "b", "channels": 1}
    cases = {
        "insertions": lambda s: s.update(
            insertions=[{"attention": "se", "init": "default", "sites": [site]}] * 100
        ),
        "format": lambda s: s.update(format="attnviz.surgery/99"),
        "channels": lambda s: s["insertions"][0]["sites"][0].update(channels="8"),
        "sites": lambda s: s["insertions"][0].update(sites={}),
    }
    for field, edit in cases.items():
        crafted = _rewrite(saved, tmp_path / f"{field}.safetensors", edit)
        with pytest.raises(FileFormatError, match=field):
            attnviz.load(crafted)


# -- run folders and checkpoints ---------------------------------------------------------
RECIPE = {
    "base": "attnviz:small_resnet",
    "attention": "se",
    "base_kwargs": {"num_classes": 4, "widths": [4, 8], "depths": [1, 1]},
    "input_size": [3, 32, 32],
}
SETTINGS = {"train_images": 16, "val_images": 8, "batch_size": 8, "image_size": 32}


def _stopped_run(out: Path) -> Path:
    from attnviz.training import train

    train(
        RECIPE,
        out=out,
        epochs=2,
        stop_after=1,
        progress=False,
        tensorboard=False,
        overrides=SETTINGS,
    )
    return out / "checkpoints"


def _resume(out: Path):
    from attnviz.training import train

    return train(RECIPE, out=out, epochs=2, progress=False, tensorboard=False, overrides=SETTINGS)


def test_a_recipe_inside_checkpoint_json_is_data_never_built(tmp_path, evil):
    ckpts = _stopped_run(tmp_path / "run")
    state_file = ckpts / "epoch-0001.state.json"
    state = json.loads(state_file.read_text())
    state["recipe"]["base"] = "evilpkg:factory"
    state["identity"]["recipe"]["base"] = "evilpkg:factory"
    state_file.write_text(json.dumps(state))
    with pytest.raises(TrainError, match="belongs to another run"):
        _resume(tmp_path / "run")
    assert _untouched(evil)


def test_the_checkpoint_pointer_cannot_leave_the_run_folder(tmp_path):
    ckpts = _stopped_run(tmp_path / "run")
    (ckpts / "latest.json").write_text(json.dumps({"epoch": 1, "state": "../../../etc/passwd"}))
    with pytest.warns(UserWarning, match="unusable pointer"):
        result = _resume(tmp_path / "run")
    assert result.resumed_from_epoch == 1  # found by scanning the folder instead


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink"])
def test_checkpoint_file_names_cannot_point_outside_the_folder(tmp_path, kind):
    import hashlib
    import shutil

    ckpts = _stopped_run(tmp_path / "run")
    outside = tmp_path / "outside.safetensors"
    shutil.copy(ckpts / "epoch-0001.safetensors", outside)
    name = {"traversal": "../../outside.safetensors", "absolute": str(outside)}.get(kind, "l.st")
    if kind == "symlink":
        (ckpts / name).symlink_to(outside)
    state_file = ckpts / "epoch-0001.state.json"
    state = json.loads(state_file.read_text())
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    state["files"]["weights"] = {"name": name, "sha256": digest}
    state_file.write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="skipping the checkpoint of epoch 1"):
        result = _resume(tmp_path / "run")
    assert result.resumed_from_epoch is None  # nothing usable: trained from scratch


def test_a_bad_run_record_is_one_train_error(tmp_path):
    out = tmp_path / "run"
    _stopped_run(out)
    (out / "run.json").write_text(json.dumps({"identity": "x", "finished": "yes"}))
    with pytest.raises(TrainError, match=r"run\.json: not a valid run record: field identity"):
        _resume(out)


# -- opting in ---------------------------------------------------------------------------
@pytest.fixture
def user_package(tmp_path, monkeypatch):
    root = tmp_path / "pkgs"
    (root / "mymodels").mkdir(parents=True)
    (root / "mymodels" / "__init__.py").write_text(
        textwrap.dedent(
            """
            import torch.nn as nn

            def tiny(num_classes=3):
                return nn.Sequential(
                    nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                    nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
                )
            """
        )
    )
    monkeypatch.syspath_prepend(str(root))
    yield "mymodels:tiny"
    sys.modules.pop("mymodels", None)


def test_a_users_own_model_loads_with_trust_code_or_base(tmp_path, user_package):
    base = attnviz.create_model(user_package, num_classes=3)
    model = attnviz.insert_attention(base, "eca", where=nn.BatchNorm2d).eval()
    path = attnviz.save(model, tmp_path / "mine.safetensors")
    with pytest.raises(UntrustedCodeError, match="mymodels:tiny"):
        attnviz.load(path)
    x = torch.randn(2, 3, 16, 16)
    for loaded in (
        attnviz.load(path, trust_code=True),
        attnviz.load(path, base=lambda: attnviz.create_model(user_package, num_classes=3)),
    ):
        assert torch.equal(loaded.eval()(x), model(x))


# -- the same files through the command line ---------------------------------------------
def _one_line_error(capsys, rc: int) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_the_cli_refuses_crafted_files_with_one_line_and_touches_nothing(
    saved, tmp_path, evil, capsys, monkeypatch
):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    crafted = _rewrite(
        saved, tmp_path / "crafted.safetensors", lambda s: s.update(base={"ref": "evilpkg:factory"})
    )
    Image.new("RGB", (16, 16)).save(tmp_path / "img.png")
    rc = cli_main(["cam", "--model", str(crafted), "--image", "img.png", "--out", "cam.png"])
    assert "--trust-code" in _one_line_error(capsys, rc)
    rc = cli_main(["compare", str(crafted), str(saved), "--data", "synthetic:4", "--out", "cmp"])
    assert "trust" in _one_line_error(capsys, rc)
    rc = cli_main(["layers", str(crafted)])
    _one_line_error(capsys, rc)
    assert _untouched(evil) and not (tmp_path / "cam.png").exists()
    assert not (tmp_path / "cmp").exists()


def test_the_cli_resume_of_a_crafted_run_is_one_line(tmp_path, capsys, evil):
    import yaml

    out = tmp_path / "run"
    ckpts = _stopped_run(out)
    state_file = ckpts / "epoch-0001.state.json"
    state = json.loads(state_file.read_text())
    state["files"]["weights"]["name"] = "../../evil.safetensors"
    state_file.write_text(json.dumps(state))
    (out / "run.json").write_text(json.dumps({"identity": {"recipe": 1}, "finished": False}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "train": SETTINGS}))
    rc = cli_main(["train", "--recipe", str(recipe), "--out", str(out), "--epochs", "2"])
    err = _one_line_error(capsys, rc)
    assert "run.json" in err and "--fresh" in err
    assert _untouched(evil)
