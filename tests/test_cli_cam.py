"""``attnviz cam``: model sources, class names, many images, and a fast ``--help``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from attnviz.cli import main


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos" / "sub"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        arr = (torch.rand(40 + 8 * i, 56, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(arr).save(folder / f"p{i}.png")
    return tmp_path / "photos"


def test_help_of_every_command_imports_no_torch():
    from attnviz.cli import COMMANDS

    for command in ["", *COMMANDS]:
        code = (
            "import sys; from attnviz.cli import main\n"
            f"try: main({[command, '--help'] if command else ['--help']!r})\n"
            "except SystemExit: pass\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, (command, out.stderr[-800:])


def test_the_help_lists_every_cam_method():
    from attnviz.cam import METHODS
    from attnviz.cli.cam import METHOD_NAMES

    assert tuple(METHODS) == METHOD_NAMES


def test_a_local_weights_file_is_loaded_and_a_random_model_is_named_as_such(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (48, 40), (30, 120, 60)).save("img.png")
    net = torchvision.models.resnet18(num_classes=5)
    torch.save(net.state_dict(), "r18.pth")
    args = ["cam", "--model", "torchvision:resnet18", "--image", "img.png", "--size", "64", "64"]
    assert main([*args, "--out", "random.png"]) == 0
    assert "random weights" in capsys.readouterr().err
    # a weights file of another class count: everything but the classifier loads (a warning)
    assert main([*args, "--weights", "r18.pth", "--out", "trained.png"]) == 0
    err = capsys.readouterr().err
    assert "random weights" not in err
    (line,) = [x for x in err.splitlines() if "classifier" in x]  # one line, no source shown
    assert line.startswith("attnviz cam: warning: ")
    assert Path("trained.png").is_file()


def test_pretrained_weights_bring_their_class_names(tmp_path, capsys, monkeypatch):
    """torchvision's weights carry ImageNet's categories; the download is replaced by a file."""
    from torchvision.models import ResNet18_Weights
    from torchvision.models._api import WeightsEnum

    state = torchvision.models.resnet18().state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: state)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (300, 200), (200, 40, 40)).save("img.png")
    assert main(["cam", "--model", "torchvision:resnet18", "--pretrained", "--image", "img.png",
                 "--target", "tabby", "--out", "o.png"]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert "random weights" not in out.err
    names = ResNet18_Weights.DEFAULT.meta["categories"]
    assert f"{names[281]} (class 281)" in out.out  # "tabby, tabby cat" is class 281


def test_many_images_make_panels_a_contact_sheet_and_an_index(photos, tmp_path, capsys):
    out = tmp_path / "cams"
    assert main(["cam", "--model", "attnviz:small_resnet", "--image", str(photos),
                 "--method", "gradcam", "layercam", "--batch-size", "2", "--out", str(out)]) == 0  # fmt: skip
    panels = sorted(p.name for p in out.glob("*_cam.png"))
    assert panels == ["0000_p0_cam.png", "0001_p1_cam.png", "0002_p2_cam.png"]
    assert (out / "contact_sheet.png").is_file()
    index = (out / "index.html").read_text()
    assert all(name in index for name in panels)
    assert "wrote 3 panels" in capsys.readouterr().out


def test_a_glob_selects_images(photos, tmp_path):
    out = tmp_path / "g"
    pattern = str(photos / "**" / "p[01].png")
    assert (
        main(["cam", "--model", "attnviz:small_resnet", "--image", pattern, "--out", str(out)]) == 0
    )
    assert len(list(out.glob("*_cam.png"))) == 2
