"""Fuzzing every file reader: mutated specs, metadata, checkpoint JSON, run records, results.

Each case takes a valid file, mutates its JSON (values replaced by other JSON of any type,
keys deleted or added, unicode, huge numbers, nesting, strings aimed at paths and code),
and hands it to the reader. The reader either returns a good result or raises the
documented error class (:class:`attnviz.errors.AttnvizError`; ``FileNotFoundError`` for a
file a mutated name points at that does not exist); any other exception, any file created
in the working folder, or a case running past its time limit fails the test. 50 cases per
reader run by default, 500 with ``-m slow``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import attnviz
from attnviz.errors import AttnvizError

CASE_SECONDS = 30
ALLOWED = (AttnvizError, FileNotFoundError)

NASTY = st.sampled_from(
    [
        "os:system",
        "subprocess:getoutput",
        "../../../etc/passwd",
        "/etc/passwd",
        'a"); __import__("os").system("touch PWNED"); ("',
        "layer1.0\nimport os",
        "torch.nn.modules.module:register_module_forward_hook",
        "evil:factory",
        "se",
        "identity",
        "",
        "\u202e\u0000\ud7ff",
    ]
)
LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
    | NASTY
)
JSON = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw, doc):
    """``doc`` after one to three random mutations."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "nest", "duplicate"]))
        if not path or op == "replace":
            value = draw(JSON)
            if not path:
                doc = value if draw(st.booleans()) else doc
                continue
            _get(doc, path[:-1])[path[-1]] = value
        elif op == "delete":
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
        elif op == "add":
            target = _get(doc, path)
            if isinstance(target, dict):
                target[draw(st.text(max_size=10) | NASTY)] = draw(JSON)
            elif isinstance(target, list):
                target.append(draw(JSON))
        elif op == "nest":
            parent = _get(doc, path[:-1])
            parent[path[-1]] = [parent[path[-1]]] * draw(st.integers(1, 3))
        else:  # duplicate a list many times (huge sizes)
            target = _get(doc, path)
            if isinstance(target, list) and target:
                target.extend(target * draw(st.integers(1, 200)))
    return doc


@contextlib.contextmanager
def time_limit(seconds: int):
    def fail(signum, frame):
        raise TimeoutError(f"a fuzz case ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def guarded(folder: Path):
    """No new files in ``folder``; only the documented errors; a time limit."""
    before = set(os.listdir(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with time_limit(CASE_SECONDS):
                yield
        except ALLOWED:
            pass
    assert set(os.listdir(folder)) <= before, set(os.listdir(folder)) - before


def cases(n_default=50, n_slow=500):
    return pytest.mark.parametrize(
        "examples", [n_default, pytest.param(n_slow, marks=pytest.mark.slow)], ids=["50", "500"]
    )


def _run(examples, test):
    settings(
        max_examples=examples,
        deadline=None,
        derandomize=examples == 50,  # the default run is the same every time
        suppress_health_check=list(HealthCheck),
        database=None,
    )(test)()


# -- readers --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    base = attnviz.create_model("attnviz:small_resnet", num_classes=3, widths=[4, 8], depths=[1, 1])
    model = attnviz.insert_attention(
        base, "se", "residual", example_input=torch.randn(1, 3, 16, 16)
    )
    model = attnviz.insert_attention(
        model, "eca", "stages", example_input=torch.randn(1, 3, 16, 16)
    )
    path = attnviz.save(model.eval(), folder / "m.safetensors", extra={"data": {"size": 16}})
    return path, attnviz.read_spec(path), load_file(str(path)), model


@cases()
def test_fuzz_load_of_a_saved_model(examples, saved_model, tmp_path, monkeypatch):
    _, spec, tensors, _ = saved_model
    monkeypatch.chdir(tmp_path)
    x = torch.randn(1, 3, 16, 16)

    @given(mutated(spec))
    def case(doc):
        target = tmp_path / "case.safetensors"
        try:
            text = json.dumps(doc)
        except (ValueError, TypeError):
            return
        save_file(tensors, str(target), metadata={"attnviz_spec": text})
        with guarded(tmp_path):
            loaded = attnviz.load(target).eval()
            with torch.no_grad():
                out = loaded(x)
            assert out.shape == (1, 3)

    _run(examples, case)


@pytest.fixture(scope="module")
def saved_placements(tmp_path_factory):
    """A spec in format /2: a block replacing convs and a parallel branch."""
    folder = tmp_path_factory.mktemp("placements")
    torch.manual_seed(0)
    base = attnviz.create_model("attnviz:small_resnet", num_classes=3, widths=[4, 8], depths=[1, 1])
    x = torch.randn(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = attnviz.insert_attention(
            base, "sk", "layer*.*.conv1", placement="replace", example_input=x
        )
    model = attnviz.insert_attention(
        model, "bottleneck", "layer2.*.conv2", placement="parallel", example_input=x, num_heads=2
    )
    path = attnviz.save(model.eval(), folder / "p.safetensors")
    return path, attnviz.read_spec(path), load_file(str(path))


@cases()
def test_fuzz_load_of_a_model_with_placements(examples, saved_placements, tmp_path, monkeypatch):
    _, spec, tensors = saved_placements
    assert spec["format"] == "attnviz.surgery/2"
    monkeypatch.chdir(tmp_path)
    x = torch.randn(1, 3, 16, 16)

    @given(mutated(spec))
    def case(doc):
        target = tmp_path / "case.safetensors"
        try:
            text = json.dumps(doc)
        except (ValueError, TypeError):
            return
        save_file(tensors, str(target), metadata={"attnviz_spec": text})
        with guarded(tmp_path):
            loaded = attnviz.load(target).eval()
            with torch.no_grad():
                out = loaded(x)
            assert out.shape == (1, 3)
            attnviz.remove_attention(loaded)

    _run(examples, case)


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    from attnviz.training import train

    out = tmp_path_factory.mktemp("run") / "run"
    recipe = {
        "base": "attnviz:small_resnet",
        "attention": "se",
        "base_kwargs": {"num_classes": 4, "widths": [4, 8], "depths": [1, 1]},
        "input_size": [3, 32, 32],
    }
    overrides = {"train_images": 16, "val_images": 8, "batch_size": 8, "image_size": 32}
    train(
        recipe,
        out=out,
        epochs=2,
        stop_after=1,
        progress=False,
        tensorboard=False,
        overrides=overrides,
    )
    return out, recipe, overrides


@cases()
def test_fuzz_checkpoint_state_and_pointer(examples, stopped_run, tmp_path, monkeypatch):
    import shutil

    from attnviz.training.checkpoint import find_checkpoint

    src, _, _ = stopped_run
    monkeypatch.chdir(tmp_path)
    state = json.loads((src / "checkpoints" / "epoch-0001.state.json").read_text())
    pointer = json.loads((src / "checkpoints" / "latest.json").read_text())

    @given(mutated(state), mutated(pointer), st.booleans())
    def case(new_state, new_pointer, both):
        folder = tmp_path / "ck"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(src / "checkpoints", folder)
        try:
            (folder / "epoch-0001.state.json").write_text(json.dumps(new_state))
            if both:
                (folder / "latest.json").write_text(json.dumps(new_pointer))
        except (ValueError, TypeError):
            return
        with guarded(tmp_path):
            found, _ = find_checkpoint(folder, warn=False)
            assert found is None or found.epoch == 1

    _run(examples, case)


@cases()
def test_fuzz_resume_from_a_mutated_checkpoint(examples, stopped_run, tmp_path, monkeypatch):
    """The whole resume path: run.json, the state (scheduler, RNG, optimizer) and the weights."""
    import shutil

    from attnviz.training.plan import prepare
    from attnviz.training.resume import decide

    src, recipe, overrides = stopped_run
    monkeypatch.chdir(tmp_path)
    plan = prepare(
        recipe,
        data="synthetic",
        out=tmp_path / "r",
        epochs=2,
        seed=0,
        device="cpu",
        finetune=None,
        overrides=overrides,
    )
    run = json.loads((src / "run.json").read_text())
    state = json.loads((src / "checkpoints" / "epoch-0001.state.json").read_text())

    @given(mutated(run), mutated(state), st.sampled_from(["run", "state"]))
    def case(new_run, new_state, which):
        out = tmp_path / "r"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(src, out)
        try:
            if which == "run":
                (out / "run.json").write_text(json.dumps(new_run))
            else:
                (out / "checkpoints" / "epoch-0001.state.json").write_text(json.dumps(new_state))
        except (ValueError, TypeError):
            return
        with guarded(tmp_path):
            decide(plan.out, plan.identity, resume=True, warn=False)
            if which == "state":
                from attnviz.training import train

                train(
                    recipe,
                    out=out,
                    epochs=2,
                    progress=False,
                    tensorboard=False,
                    overrides=overrides,
                )

    _run(min(examples, 20) if examples == 50 else examples, case)


@cases()
def test_fuzz_ablation_cell_results(examples, tmp_path, monkeypatch):
    from attnviz.study.ablate import _finished, _summarize
    from attnviz.study.grid import Cell

    monkeypatch.chdir(tmp_path)
    legacy = Path(__file__).parent / "data" / "v0.1" / "ablation_result.json"
    record = json.loads(legacy.read_text())
    cell = Cell(record["recipe"], record["attention"], record["where"], record["block_kwargs"], 0)
    record["id"] = cell.id

    @given(mutated(record))
    def case(doc):
        folder = tmp_path / "cells" / cell.id
        folder.mkdir(parents=True, exist_ok=True)
        for p in folder.iterdir():
            p.unlink()
        try:
            (folder / "result.json").write_text(json.dumps(doc))
        except (ValueError, TypeError):
            return
        with guarded(tmp_path):
            if _finished(folder, cell):
                row = {**{k: v for k, v in doc.items() if k != "metrics"}, **doc["metrics"]}
                _summarize([row])

    _run(examples, case)
