"""Launchers: the same grid gives the same results on this machine, on Ray and through submitit;
faults (a dead node, a killed job, a killed runner, a preempted job) lose and duplicate nothing;
bad launcher input fails in one line before any cell runs."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest

from attnviz.cli import main
from attnviz.errors import LaunchError, UnknownNameError
from attnviz.study import RayLauncher, SlurmLauncher, load_grid, run_grid
from attnviz.study.ablate import METRICS, run_cell
from attnviz.study.launchers import CellTask, make_launcher, read_attempts, run_task
from attnviz.study.launchers.worker import OUT_ID_FILE, out_folder_id
from tests.test_study import _grid

ROOT = Path(__file__).resolve().parents[1]
#: what a deterministic CPU run reproduces exactly (not the timings)
SAME = [m for m in METRICS if m not in ("latency_ms", "train_time_s")] + ["val_acc_training"]
FOUR = {"attention": ["none", "se"], "seeds": [0, 1]}


def _by_cell(result) -> dict[tuple[str, int], dict]:
    assert len({r["id"] for r in result.rows}) == len(result.rows)  # no cell twice
    return {(r["setting"], r["seed"]): {k: r.get(k) for k in SAME} for r in result.rows}


@pytest.fixture(scope="module")
def local_four(tmp_path_factory) -> dict[tuple[str, int], dict]:
    """The 4-cell tiny grid on the local launcher: what every other launcher must reproduce."""
    tmp = tmp_path_factory.mktemp("local")
    result = run_grid(_grid(tmp, **FOUR), tmp / "out", progress=False)
    assert not result.failed and len(result.rows) == 4
    return _by_cell(result)


def _started(cell_dir: Path) -> list[dict]:
    return [a for a in read_attempts(cell_dir) if a["event"] == "started"]


# -- bad input ---------------------------------------------------------------------------
def test_unknown_launcher_names_the_closest_one_before_anything_runs(tmp_path, capsys):
    with pytest.raises(UnknownNameError, match=r"unknown launcher 'rey'; closest valid: \['ray'"):
        run_grid(_grid(tmp_path), tmp_path / "out", launcher="rey", progress=False)
    assert not (tmp_path / "out").exists()
    code = main(
        ["ablate", str(_grid(tmp_path)), "--out", str(tmp_path / "o"), "--launcher", "slrum"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "closest valid: ['slurm'" in err


def test_flags_of_another_launcher_are_refused(tmp_path, capsys):
    grid = str(_grid(tmp_path))
    out = str(tmp_path / "out")
    assert main(["ablate", grid, "--out", out, "--ray-address", "auto"]) == 2
    assert "--ray-address is an option of --launcher ray, not of --launcher local" in (
        capsys.readouterr().err
    )
    assert main(["ablate", grid, "--out", out, "--launcher", "ray", "--workers", "2"]) == 2
    assert "--workers sizes the local launcher's pool" in capsys.readouterr().err
    with pytest.raises(UnknownNameError, match="closest valid: \\['address'"):
        make_launcher("ray", adress="auto")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("module", "launcher", "extra"), [("ray", "ray", "ray"), ("submitit", "slurm", "slurm")]
)
def test_a_missing_extra_says_which_to_install(monkeypatch, module, launcher, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(LaunchError, match=rf"pip install 'attnviz\[{extra}\]'"):
        make_launcher(launcher)


def test_slurm_without_sbatch_says_where_to_run(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LaunchError, match="run attnviz ablate on a login node"):
        SlurmLauncher()


def test_cli_flags_reach_the_launchers(tmp_path, monkeypatch):
    import argparse
    import shutil

    from attnviz.cli._launchers import LAUNCHER_NAMES, launcher_from_args
    from attnviz.cli.ablate import configure
    from attnviz.study.launchers import LAUNCHERS

    assert tuple(LAUNCHERS) == LAUNCHER_NAMES  # the CLI's help lists every launcher

    def parse(*argv):
        p = argparse.ArgumentParser()
        configure(p)
        return launcher_from_args(p.parse_args(["g.yaml", "--out", "o", *argv]))

    ray = parse(
        "--launcher",
        "ray",
        "--ray-address",
        "auto",
        "--cell-gpus",
        "0.5",
        "--cell-cpus",
        "4",
        "--ray-max-retries",
        "5",
    )
    assert (ray.address, ray.cell_gpus, ray.cell_cpus, ray.max_retries) == ("auto", 0.5, 4, 5)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")  # as on a login node
    slurm = parse(
        "--launcher",
        "slurm",
        "--slurm-partition",
        "gpu",
        "--slurm-time",
        "30",
        "--cell-gpus",
        "2",
        "--cell-cpus",
        "8",
        "--slurm-mem-gb",
        "16",
        "--slurm-option",
        "account=proj",
        "--slurm-resubmits",
        "2",
        "--slurm-max-jobs",
        "4",
    )
    assert slurm.parameters == {
        "job_name": "attnviz-cell",
        "time": 30,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": 8,
        "gpus_per_node": 2,
        "partition": "gpu",
        "mem": "16GB",
        "account": "proj",
    }
    assert (slurm.resubmits, slurm.max_jobs, slurm.wait) == (2, 4, True)
    assert parse("--launcher", "slurm", "--slurm-no-wait").wait is False
    with pytest.raises(LaunchError, match="--cell-gpus must be at least 2"):
        run_grid(_grid(tmp_path), tmp_path / "out", torchrun=2, launcher=RayLauncher(cell_gpus=1))


def test_an_unreachable_ray_address_fails_fast_and_starts_nothing(tmp_path):
    import ray

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(LaunchError, match=rf"no Ray cluster answers at .*:{port} within 5 s"):
        run_grid(
            _grid(tmp_path),
            tmp_path / "out",
            launcher=RayLauncher(address=f"127.0.0.1:{port}", connect_timeout_s=5),
            progress=False,
        )
    assert time.perf_counter() - t0 < 15
    assert not ray.is_initialized() and not (tmp_path / "out" / "cells").exists()


def _task(tmp_path: Path, out: Path, out_id: str) -> CellTask:
    grid = load_grid(_grid(tmp_path, attention=["se"]))
    return CellTask(grid, grid.cells()[0], str(out), out_id, run_cell, device="cpu")


def test_a_worker_that_does_not_see_the_runners_out_folder_refuses_to_train(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    runner_id = out_folder_id(out)
    (out / OUT_ID_FILE).unlink()  # the worker's node has its own, empty, folder at that path
    task = _task(tmp_path, out, runner_id)
    with pytest.raises(LaunchError) as err:
        run_task(task, launcher="ray")
    msg = str(err.value)
    assert (
        "does not see the runner's out folder" in msg
        and "must be on storage all workers see" in msg
    )
    assert len(msg.splitlines()) == 1 and not (task.cell_dir / "train").exists()
    out_folder_id(out)  # another folder's id
    with pytest.raises(LaunchError, match="is another run's"):
        run_task(task, launcher="ray")


def test_a_worker_that_cannot_write_the_out_folder_refuses_to_train(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cells").write_text("")  # not a folder: nothing can be written under it, root or not
    task = _task(tmp_path, out, out_folder_id(out))
    with pytest.raises(
        LaunchError, match=r"worker .* cannot write .*: the --out folder must be on storage"
    ):
        run_task(task, launcher="slurm")


# -- ray ---------------------------------------------------------------------------------
@pytest.fixture
def ray_env(monkeypatch):
    """A local Ray runtime's environment, restored after (ray.init sets RAY_AUTH_MODE)."""
    import ray

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.timeout(240)
def test_ray_local_runtime_gives_the_local_results(tmp_path, local_four, ray_env):
    import ray

    result = run_grid(
        _grid(tmp_path, attention=["none", "se"], seeds=[0]),
        tmp_path / "out",
        launcher=RayLauncher(cell_cpus=1),
        progress=False,
    )
    assert not result.failed and not ray.is_initialized()  # the runtime it started is stopped
    rows = _by_cell(result)
    assert rows == {k: v for k, v in local_four.items() if k in rows} and len(rows) == 2
    for cell_dir in (tmp_path / "out" / "cells").iterdir():
        (attempt,) = _started(cell_dir)
        assert attempt["launcher"] == "ray" and attempt["node"]


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _RayNode:
    """One ``ray start --block`` node that this test started, stopped by pid (never ``ray stop``)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]):
        ports = [
            "ray-client-server",
            "dashboard-agent-listen",
            "dashboard-agent-grpc",
            "runtime-env-agent",
            "metrics-export",
        ]
        cmd = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--block",
            "--num-cpus=1",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            "--object-store-memory=100000000",
            *[f"--{p}-port={_free_port()}" for p in ports],
            *args,
        ]
        self.log = log
        self.seen: set[tuple[int, str]] = set()
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_started(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while "Ray runtime started" not in self.log.read_text():
            assert self.proc.poll() is None and time.time() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """This node's live processes: every one seen so far (pid and start time, so a reused
        pid is never taken for ours), plus the root's current descendants."""
        if self.proc.poll() is None:
            for pid in [self.proc.pid, *_descendants(self.proc.pid)]:
                if (fields := _stat(pid)) is not None:
                    self.seen.add((pid, fields[19]))
        return [
            pid for pid, start in self.seen if (f := _stat(pid)) and f[19] == start and f[0] != "Z"
        ]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        for pid in self.pids():
            with suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self) -> None:
        self.pids()  # record the processes it has now
        if self.proc.poll() is None:  # `ray start --block` stops its own processes on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        self.kill(signal.SIGKILL)  # and whatever of ours is left
        self.proc.wait(15)


@pytest.fixture
def ray_cluster(tmp_path):
    """A head node and one worker node on this machine, with their own auth token."""
    token = tmp_path / "ray-token"
    token.write_text(secrets.token_hex(32))
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    temp = Path(f"/tmp/attnviz-ray-{secrets.token_hex(3)}")  # short: Ray's socket paths are long
    nodes = []
    try:
        head = _RayNode(
            ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"],
            tmp_path / "head.log",
            env,
        )
        nodes.append(head)
        head.wait_started()
        worker = _RayNode([f"--address=127.0.0.1:{port}"], tmp_path / "worker.log", env)
        nodes.append(worker)
        worker.wait_started()
        yield f"127.0.0.1:{port}", env, worker
    finally:
        for node in reversed(nodes):
            node.stop()
        assert not [p for n in nodes for p in n.pids()]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_cluster_survives_a_dead_worker_node(tmp_path, local_four, ray_cluster):
    address, env, worker = ray_cluster
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "attnviz",
        "ablate",
        str(_grid(tmp_path, **FOUR)),
        "--out",
        str(out),
        "--launcher",
        "ray",
        "--ray-address",
        address,
        "--cell-cpus",
        "1",
    ]
    log = (tmp_path / "runner.log").open("w")
    runner = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    killed = None
    try:
        deadline = time.time() + 300
        while killed is None and runner.poll() is None and time.time() < deadline:
            on_worker = set(worker.pids())
            for cell_dir in sorted(out.glob("cells/*")):
                started = _started(cell_dir)
                if (
                    started
                    and started[-1]["pid"] in on_worker
                    and not (cell_dir / "result.json").exists()
                ):
                    worker.kill()  # the node dies while its cell trains
                    killed = cell_dir
                    break
            time.sleep(0.05)
        assert killed is not None, (
            "no cell ran on the worker node:\n" + (tmp_path / "runner.log").read_text()
        )
        assert runner.wait(300) == 0, (tmp_path / "runner.log").read_text()
    finally:
        if runner.poll() is None:
            runner.kill()
    attempts = _started(killed)
    assert len(attempts) == 2 and attempts[0]["node"] != attempts[1]["node"]  # retried elsewhere
    result = run_grid(_grid(tmp_path, **FOUR), out, progress=False)  # collects, runs nothing
    assert _by_cell(result) == local_four
    assert all(len(_started(c)) == 1 for c in out.glob("cells/*") if c != killed)
    assert len((out / "results.csv").read_text().strip().splitlines()) == 1 + 4


# -- slurm through submitit's local executor ---------------------------------------------
def _local_executor(folder: Path, cls=None):
    from tests._local_slurm import ReattachableLocalExecutor

    executor = (cls or ReattachableLocalExecutor)(folder)
    executor.update_parameters(timeout_min=20)  # LocalExecutor's limit (Slurm's is `time`)
    return executor


def _kill_first_attempt(out: Path, stop: threading.Event, killed: list[Path]) -> None:
    """Kill the first cell job that starts training, once (a node fault in the middle of it)."""
    while not stop.is_set() and not killed:
        for cell_dir in sorted(out.glob("cells/*")):
            started = _started(cell_dir)
            if started and not (cell_dir / "result.json").exists():
                os.kill(started[0]["pid"], signal.SIGKILL)
                killed.append(cell_dir)
                break
        time.sleep(0.02)


@pytest.mark.timeout(300)
def test_slurm_job_that_fails_once_is_resubmitted_with_the_submit_options(
    tmp_path, local_four, caplog
):
    executor = _local_executor(tmp_path / "jobs")
    launcher = SlurmLauncher(
        executor=executor,
        partition="gpu",
        time_min=30,
        mem_gb=2,
        options={"account": "proj"},
        poll_s=0.2,
    )
    out = tmp_path / "out"
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_attempt, args=(out, stop, killed))
    killer.start()
    try:
        with caplog.at_level(logging.WARNING, "attnviz.study.launchers.slurm"):
            grid = _grid(tmp_path, attention=["se"], seeds=[1])
            result = run_grid(grid, out, launcher=launcher, progress=False)
    finally:
        stop.set()
        killer.join()
    assert not result.failed and _by_cell(result) == {
        k: v for k, v in local_four.items() if k == ("tiny/se@residual", 1)
    }
    (cell_dir,) = killed
    first, second = _started(cell_dir)
    assert first["job_id"] != second["job_id"]  # a second job, not a retry inside the first
    assert json.loads((cell_dir / "job.json").read_text())["attempt"] == 2
    assert "resubmitting" in caplog.text and "ended (FINISHED) without a result" in caplog.text
    expected = {"partition": "gpu", "time": 30, "mem": "2GB", "account": "proj"}
    expected.update(cpus_per_task=1, gpus_per_node=0, nodes=1, ntasks_per_node=1)
    assert {k: executor.parameters.get(k) for k in expected} == expected


@pytest.mark.timeout(300)
def test_slurm_job_on_a_node_without_the_out_folder_fails_in_one_line(tmp_path):
    out, grid = tmp_path / "out", _grid(tmp_path, attention=["se"])
    executor = _local_executor(tmp_path / "jobs")
    # the job's node has no shared storage: the runner's folder is not what it sees at that path
    executor.update_parameters(setup=[f"rm -f {out / OUT_ID_FILE}"])
    detached = SlurmLauncher(executor=executor, wait=False)
    first = run_grid(grid, out, launcher=detached, progress=False)  # submits and returns
    (cell_dir,) = out.glob("cells/*")
    assert first.pending == [cell_dir.name] and not first.failed and not first.rows
    job_id = json.loads((cell_dir / "job.json").read_text())["job_id"]
    launcher = SlurmLauncher(executor=_local_executor(tmp_path / "jobs"), resubmits=0, poll_s=0.2)
    result = run_grid(grid, out, launcher=launcher, progress=False)  # a later run collects it
    assert json.loads((cell_dir / "job.json").read_text())["job_id"] == job_id  # waited for
    (error,) = result.failed.values()
    assert error.startswith(f"Slurm job {job_id} ended") and len(error.splitlines()) == 1
    assert "does not see the runner's out folder" in error
    assert "must be on storage all workers see" in error


@pytest.mark.timeout(300)
def test_slurm_runner_killed_midway_restarts_without_duplicates_and_gives_the_local_results(
    tmp_path, local_four
):
    grid, out, jobs = _grid(tmp_path, **FOUR), tmp_path / "out", tmp_path / "jobs"
    script = (
        "import sys; from pathlib import Path; from attnviz.study import run_grid, SlurmLauncher; "
        "from tests.test_launchers import _local_executor; "
        "run_grid(sys.argv[1], sys.argv[2], progress=False, launcher=SlurmLauncher("
        "executor=_local_executor(Path(sys.argv[3])), max_jobs=2, poll_s=0.2))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "runner.log").open("w") as log:
        runner = subprocess.Popen(
            [sys.executable, "-c", script, str(grid), str(out), str(jobs)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 240
        while not list(out.glob("cells/*/result.json")):
            assert runner.poll() is None and time.time() < deadline, (
                tmp_path / "runner.log"
            ).read_text()
            time.sleep(0.05)
    finally:
        runner.kill()  # the runner only: its jobs go on, as Slurm jobs do
        runner.wait()
    finished = {p.parent: p.stat().st_mtime_ns for p in out.glob("cells/*/result.json")}
    submitted = {
        p.parent: json.loads(p.read_text())["job_id"] for p in out.glob("cells/*/job.json")
    }
    assert len(finished) < 4 and len(submitted) < 4  # max_jobs=2: some cells were never submitted
    launcher = SlurmLauncher(executor=_local_executor(jobs), poll_s=0.2)
    result = run_grid(grid, out, launcher=launcher, progress=False)
    assert not result.failed and _by_cell(result) == local_four
    for cell_dir in out.glob("cells/*"):
        assert len(_started(cell_dir)) == 1, cell_dir  # no cell ran twice
        if cell_dir in finished:
            assert (cell_dir / "result.json").stat().st_mtime_ns == finished[cell_dir]
        elif (
            cell_dir in submitted
        ):  # still running when the runner died: waited for, not resubmitted
            assert json.loads((cell_dir / "job.json").read_text())["job_id"] == submitted[cell_dir]
    assert len(list(out.glob("cells/*/job.json"))) == 4  # the missing cells were submitted


@pytest.mark.slow  # ~25 s: two job starts and a 3-epoch reference run
@pytest.mark.timeout(300)
def test_slurm_preempted_job_is_requeued_and_resumes(tmp_path):
    from submitit.local.local import LocalExecutor

    out = tmp_path / "out"
    grid = _grid(tmp_path, attention=["se"], train={"epochs": 3, "train_images": 512})
    reference = _by_cell(run_grid(grid, tmp_path / "local", progress=False))
    stop, sent = threading.Event(), []

    def preempt() -> None:  # what Slurm does before it takes the node: signal the job
        while not stop.is_set() and not sent:
            for cell_dir in out.glob("cells/*"):
                first = cell_dir / "train" / "checkpoints" / "epoch-0001.safetensors"
                if _started(cell_dir) and first.with_name("latest.json").exists():
                    os.kill(_started(cell_dir)[0]["pid"], signal.SIGUSR2)
                    sent.append((cell_dir, first.stat().st_mtime_ns))
                    break
            time.sleep(0.01)

    watcher = threading.Thread(target=preempt)
    watcher.start()
    try:
        launcher = SlurmLauncher(
            executor=_local_executor(tmp_path / "jobs", LocalExecutor), resubmits=0, poll_s=0.2
        )
        result = run_grid(grid, out, launcher=launcher, progress=False)
    finally:
        stop.set()
        watcher.join()
    ((cell_dir, mtime),) = sent
    assert not result.failed and _by_cell(result) == reference
    first, second = _started(cell_dir)
    assert first["job_id"] == second["job_id"]  # requeued: the same job, started again
    first_epoch = cell_dir / "train" / "checkpoints" / "epoch-0001.safetensors"
    assert first_epoch.stat().st_mtime_ns == mtime  # resumed after epoch 1, not trained again


def test_a_cells_warnings_are_one_line_naming_the_cell(capsys):
    """Workers print for the runner: a cell's warning is one line with its id, not file:line."""
    import warnings

    from attnviz._warnings import one_line_warnings

    with one_line_warnings("cell se-0"):
        warnings.warn("placement='replace' took 1 tensor(s)\n of the base model", stacklevel=1)
    err = capsys.readouterr().err
    assert err == "cell se-0: warning: placement='replace' took 1 tensor(s) of the base model\n"
    assert warnings.showwarning.__module__ == "warnings"  # restored
