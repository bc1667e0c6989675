"""The README's examples run as written: the Python API tour and the recipe YAML."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from attnviz.recipes import build_model, recipe_from_dict

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_the_readme_starts_with_exactly_the_two_setup_commands():
    first = _blocks("bash")[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]
    assert README.index("```bash") < README.index("##")  # before any section


def test_the_python_api_example_runs(tmp_path, monkeypatch):
    (code,) = [b for b in _blocks("python") if "insert_attention" in b]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert (tmp_path / "se.safetensors").is_file()
    assert set(namespace["values"]) >= {"layer3"}


def test_the_recipe_example_is_a_valid_recipe():
    (text,) = [b for b in _blocks("yaml") if "base:" in b]
    recipe = recipe_from_dict(yaml.safe_load(text))
    model = build_model(recipe)
    assert model.fc.out_features == 10
