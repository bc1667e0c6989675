"""DDP reduction: two gloo processes, each syncing its half, equal one process on all data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import attnviz.metrics as M


def _accumulators() -> dict[str, M.Accumulator]:
    return {
        "features": M.FeatureStats(),
        "cka": M.LinearCKA(),
        "cka_matrix": M.CKAMatrix(),
        "gates": M.GateStats(num_classes=3, bins=8),
        "agreement": M.CamAgreement(),
        "localization": M.CamLocalization(num_classes=3),
        "classification": M.ClassificationStats(top_k=2),
    }


def _batch(i: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + i)
    feats = torch.relu(torch.randn(8, 4, 5, 5, generator=g))
    return {
        "feats": feats,
        "other": feats[:, :2] + torch.rand(8, 2, 5, 5, generator=g),
        "gates": torch.rand(8, 4, 1, 1, generator=g),
        "labels": torch.randint(0, 3, (8,), generator=g),
        "cams": torch.rand(8, 16, 16, generator=g),
        "ref": torch.rand(8, 16, 16, generator=g),
        "masks": torch.rand(8, 16, 16, generator=g) > 0.8,
        "logits": torch.randn(8, 3, generator=g),
    }


def _update(accs: dict[str, M.Accumulator], b: dict[str, torch.Tensor]) -> None:
    accs["features"].update(b["feats"])
    accs["cka"].update(b["feats"], b["other"])
    accs["cka_matrix"].update([b["feats"], b["other"]], [b["other"]])
    accs["gates"].update(b["gates"], b["labels"])
    accs["agreement"].update(b["cams"], b["ref"])
    accs["localization"].update(b["cams"], b["masks"], b["labels"])
    accs["classification"].update(b["logits"], b["labels"])


def _jsonable(out: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in out.items()}


def _results(accs: dict[str, M.Accumulator]) -> dict[str, Any]:
    return {name: _jsonable(acc.compute()) for name, acc in accs.items()}


N_BATCHES = 4


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # two processes on a small machine
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        accs = _accumulators()
        for i in range(rank, N_BATCHES, 2):
            _update(accs, _batch(i))
        synced_gates = accs["gates"].synced()  # a synced copy; the original stays local
        result: dict[str, Any] = {"local_gates_unchanged": accs["gates"].compute()["n_images"]}
        accs["gates"] = synced_gates
        for name, acc in accs.items():
            if name != "gates":
                acc.sync()
        result.update(_results(accs))
        for key, call in (
            ("second_sync_error", lambda: accs["features"].sync()),
            ("update_after_sync_error", lambda: _update(accs, _batch(0))),
        ):
            try:
                call()
                result[key] = None
            except RuntimeError as err:
                result[key] = str(err)
        lonely = M.FeatureStats()
        if rank == 0:
            lonely.update(torch.rand(2, 3, 4, 4))
        try:
            lonely.sync()
            result["mismatch_error"] = None
        except RuntimeError as err:
            result["mismatch_error"] = str(err)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def test_sync_over_two_gloo_ranks_equals_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = _accumulators()
    for i in range(N_BATCHES):
        _update(single, _batch(i))
    expected = _results(single)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert "state layouts differ across ranks" in got.pop("mismatch_error")
        assert "already synced" in got.pop("second_sync_error")
        assert "update after sync()" in got.pop("update_after_sync_error")
        assert got.pop("local_gates_unchanged") == 8 * N_BATCHES // 2
        for name in expected:
            assert _close(got[name], expected[name]), (rank, name, got[name], expected[name])
