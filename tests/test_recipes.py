"""The shipped recipes (models/*.yaml) load and build; bad recipes fail naming the bad value."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml

from attnviz.data import DEMO_TRAINING
from attnviz.nets import DEMO_NET
from attnviz.recipes import RecipeError, build_model, load_model, load_recipe
from attnviz.surgery import ReplacedWeightsWarning, attention_modules, surgery_spec
from attnviz.training import settings_from_dict

MODELS = Path(__file__).resolve().parents[1] / "models"
# Recipes have a base; other YAML files in models/ (ablation grids) are not recipes.
SHIPPED = sorted(
    p for p in MODELS.glob("*.yaml") if "base" in (yaml.safe_load(p.read_text()) or {})
)
EXPECTED = (
    {
        f"{arch}{suffix}"
        for arch in ("small-resnet", "resnet18", "resnet50")
        for suffix in ("", "-se", "-eca", "-cbam")
    }
    | {f"small-resnet-{s}" for s in ("nl", "aa", "bot", "sk")}
    | {"resnet50-nl", "resnet50-bot"}
)


def test_the_expected_recipes_are_shipped():
    assert {p.stem for p in SHIPPED} >= EXPECTED


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_recipe_loads_and_builds(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem and recipe.description
    settings_from_dict(recipe.train)  # valid train: section
    recipe.input_size = [3, 64, 64]  # a small example input keeps the surgery cheap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplacedWeightsWarning)
        model = build_model(recipe).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    blocks = attention_modules(model)
    if recipe.attention == "none":
        assert not blocks
    elif recipe.placement == "replace":  # the block takes the replaced module's place
        sites = surgery_spec(model)["insertions"][0]["sites"]
        assert blocks and set(blocks) == {s["site"] for s in sites}
    else:
        assert blocks and all(".attn" in name or name.endswith("attn") for name in blocks)
    if recipe.base.startswith("torchvision:"):  # replacing blocks have no identity form
        assert recipe.init == ("default" if recipe.placement == "replace" else "identity")
        assert recipe.pretrained is False


@pytest.mark.parametrize("name", ["resnet18-se", "resnet50-cbam"])
def test_identity_init_keeps_the_base_function(name):
    recipe = load_recipe(MODELS / f"{name}.yaml")
    recipe.input_size = [3, 64, 64]
    torch.manual_seed(0)
    modified = build_model(recipe).eval()
    base = load_recipe(MODELS / f"{name.split('-')[0]}.yaml")
    base.input_size = [3, 64, 64]
    original = build_model(base).eval()
    original.load_state_dict(
        {k: v for k, v in modified.state_dict().items() if k in original.state_dict()}
    )
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(modified(x), original(x))


def test_small_resnet_recipes_use_the_demo_network_and_schedule():
    for path in MODELS.glob("small-resnet*.yaml"):
        recipe = load_recipe(path)
        assert recipe.base == "attnviz:small_resnet"
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.base_kwargs.items()}
        assert {k: kwargs[k] for k in DEMO_NET} == DEMO_NET
        assert recipe.input_size == [3, 64, 64]
        # the channel and spatial gates sit on the residual branch; the families elsewhere
        assert recipe.where == "residual" or recipe.attention in ("nl", "bottleneck", "sk")
        s = settings_from_dict(recipe.train)
        demo = DEMO_TRAINING
        assert (s.epochs, s.batch_size, s.lr, s.momentum, s.weight_decay) == (
            demo["epochs"],
            demo["batch_size"],
            demo["lr"],
            demo["momentum"],
            demo["weight_decay"],
        )
        assert (s.train_images, s.val_images, s.image_size) == (
            demo["train_images"],
            demo["val_images"],
            demo["size"],
        )
        assert s.flip == "both" and s.channels_last and s.opt == "sgd"


def _write(tmp_path, **changes):
    data = yaml.safe_load((MODELS / "small-resnet-se.yaml").read_text())
    data.update(changes)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"atention": "se"}, r"unknown key 'atention'.*'attention'"),
        ({"base": "torchvision:resnet1888"}, r"base:.*resnet1888"),
        ({"base": "nosuchlib:net"}, r"base:.*nosuchlib"),
        ({"attention": "squeeze"}, r"attention:.*unknown attention 'squeeze'"),
        ({"init": "zeros"}, r"init:.*'zeros'"),
        ({"train": {"epochz": 3}}, r"train: unknown key 'epochz'.*'epochs'"),
        ({"train": {"epochs": 0}}, r"train: epochs must be an int in \[1, 10000\], got 0"),
        ({"train": {"opt": ""}}, r"train: opt must be a non-empty string"),
        ({"train": ["epochs", 3]}, r"train must be a mapping"),
    ],
)
def test_bad_recipes_fail_naming_the_bad_value(tmp_path, changes, pattern):
    path = _write(tmp_path, **changes)
    with pytest.raises(RecipeError, match=pattern) as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_missing_recipe_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_load_model_accepts_a_recipe():
    model = load_model(MODELS / "small-resnet-eca.yaml")
    assert len(attention_modules(model)) == 3
