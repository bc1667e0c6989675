"""Atomic writes: all or nothing, with the permissions of a plain open()."""

from __future__ import annotations

import os
import stat

import pytest

from attnviz._atomic import atomic_write, atomic_write_json


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_json(tmp_path / "a.json", {"epoch": 1})

    def crash(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write('{"epo')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"epoch":1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_files_get_the_umask_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib

        import attnviz._atomic as mod

        importlib.reload(mod)
        path = mod.atomic_write_json(tmp_path / "report.json", [1, 2])
    finally:
        os.umask(old)
        importlib.reload(mod)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# -- check_writable_folder -------------------------------------------------------------------
def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_writable_folder_check_creates_nothing_that_stays(tmp_path):
    from attnviz._atomic import check_writable_folder

    assert check_writable_folder(tmp_path / "runs" / "a" / "b", "out") == tmp_path / "runs/a/b"
    assert check_writable_folder(tmp_path, "out") == tmp_path  # an existing folder
    assert _tree(tmp_path) == []


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("notes.txt", r"^out '.*notes\.txt': exists and is a file, not a folder$"),
        ("notes.txt/run", r"^out '.*notes\.txt/run': '.*notes\.txt' is a file, not a folder$"),
    ],
)
def test_a_file_where_a_folder_must_be_is_one_line_naming_it(tmp_path, target, message):
    from attnviz._atomic import check_writable_folder
    from attnviz.errors import OutputError

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match=message):
        check_writable_folder(tmp_path / target, "out")
    assert _tree(tmp_path) == ["notes.txt"]


def test_a_folder_that_cannot_be_written_leaves_no_folder_it_created(tmp_path, monkeypatch):
    import attnviz._atomic as mod
    from attnviz.errors import OutputError

    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mod.tempfile, "mkstemp", refuse)  # as root, chmod would not refuse
    with pytest.raises(OutputError, match=r"'.*new/deep': cannot write files in it \(Permission"):
        mod.check_writable_folder(tmp_path / "new" / "deep", "out")
    assert _tree(tmp_path) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_a_folder_the_system_refuses_is_one_line():
    from attnviz._atomic import check_writable_folder
    from attnviz.errors import OutputError

    with pytest.raises(OutputError, match=r"^out '/proc/x': cannot create '/proc/x' \("):
        check_writable_folder("/proc/x", "out")
    with pytest.raises(OutputError, match=r"^out '/proc/self': cannot write files in it"):
        check_writable_folder("/proc/self", "out")


def test_the_check_never_changes_the_tree_it_probes(tmp_path_factory):
    """Whatever exists (files, folders) and whatever is asked, the tree is the same after."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from attnviz._atomic import check_writable_folder
    from attnviz.errors import OutputError

    parts = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4)

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(parts, st.booleans()), max_size=5), parts)
    def case(existing, target):
        root = tmp_path_factory.mktemp("tree")
        for path, is_file in existing:
            p = root.joinpath(*path)
            try:
                if is_file:
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.touch()
                else:
                    p.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # a file in the way of this entry: the tree keeps the earlier one
        before = _tree(root)
        try:
            check_writable_folder(root.joinpath(*target), "out")
        except OutputError as exc:
            assert "\n" not in str(exc) and "not a folder" in str(exc)
        assert _tree(root) == before

    case()
