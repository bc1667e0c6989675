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
