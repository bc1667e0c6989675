"""``attnviz ablate``'s launcher flags: ``--launcher local|ray|slurm`` and each launcher's options.

A flag given for another launcher than the one chosen is an error (``--ray-address``
with ``--launcher slurm``). The library is imported when the flags are read, not when
the parser is built (``--help`` imports no torch).
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from ..errors import LaunchError

#: The launchers (attnviz.study.launchers.LAUNCHERS; a test keeps the two equal).
LAUNCHER_NAMES = ("local", "ray", "slurm")

__all__ = ["add_launcher_arguments", "launcher_from_args"]

#: flag destination -> (the launchers that take it, their parameter)
_FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "cell_cpus": (("ray", "slurm"), "cell_cpus"),
    "cell_gpus": (("ray", "slurm"), "cell_gpus"),
    "ray_address": (("ray",), "address"),
    "ray_max_retries": (("ray",), "max_retries"),
    "slurm_partition": (("slurm",), "partition"),
    "slurm_time": (("slurm",), "time_min"),
    "slurm_mem_gb": (("slurm",), "mem_gb"),
    "slurm_option": (("slurm",), "options"),
    "slurm_max_jobs": (("slurm",), "max_jobs"),
    "slurm_resubmits": (("slurm",), "resubmits"),
    "slurm_no_wait": (("slurm",), "wait"),
}


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def add_launcher_arguments(p: argparse.ArgumentParser) -> None:
    """The launcher flags of ``attnviz ablate``."""
    g = p.add_argument_group("where cells run")
    g.add_argument(
        "--launcher",
        default="local",
        metavar="NAME",
        help=f"{' | '.join(LAUNCHER_NAMES)} (default local: this machine, --workers at once)",
    )
    g.add_argument("--cell-cpus", type=int, metavar="N", help="ray, slurm: CPUs per cell (1)")
    g.add_argument(
        "--cell-gpus", type=float, metavar="N", help="ray, slurm: GPUs per cell (0: CPU cells)"
    )
    g.add_argument(
        "--ray-address",
        metavar="auto|HOST:PORT",
        help="join this Ray cluster (default: start a local Ray runtime)",
    )
    g.add_argument(
        "--ray-max-retries", type=int, metavar="N", help="re-runs of a cell whose node died (3)"
    )
    g.add_argument("--slurm-partition", metavar="NAME", help="Slurm partition of the cells' jobs")
    g.add_argument("--slurm-time", type=int, metavar="MIN", help="time limit per job (120 min)")
    g.add_argument("--slurm-mem-gb", type=float, metavar="GB", help="memory per job")
    g.add_argument(
        "--slurm-option",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="any other submitit SlurmExecutor parameter (account=..., qos=...); repeatable",
    )
    g.add_argument(
        "--slurm-max-jobs", type=int, metavar="N", help="at most N cells queued or running at once"
    )
    g.add_argument(
        "--slurm-resubmits", type=int, metavar="N", help="resubmissions of a failed job (1)"
    )
    g.add_argument(
        "--slurm-no-wait",
        action="store_true",
        help="submit and exit; run the same command again later to collect the results",
    )


def launcher_from_args(args: argparse.Namespace) -> Any:
    """The launcher the flags ask for (errors name the flag and the launcher it belongs to)."""
    from .._select import unknown_name_error
    from ..study.launchers import LAUNCHERS, make_launcher

    name = args.launcher
    if name not in LAUNCHERS:
        raise unknown_name_error("launcher", name, list(LAUNCHERS))
    if getattr(args, "workers", 1) != 1 and name != "local":
        raise LaunchError(
            f"--workers sizes the local launcher's pool; --launcher {name} runs as many cells at "
            "once as the cluster has room for (set --cell-cpus / --cell-gpus)"
        )
    options: dict[str, Any] = {"workers": args.workers} if name == "local" else {}
    for dest, (names, param) in _FLAGS.items():
        value = getattr(args, dest, None)
        if value is None or value is False:
            continue
        if name not in names:
            raise LaunchError(
                f"--{dest.replace('_', '-')} is an option of --launcher {' or '.join(names)}, "
                f"not of --launcher {name}"
            )
        if dest == "slurm_option":
            value = dict(value)
        elif dest == "slurm_no_wait":
            value = False
        elif dest == "cell_gpus" and name == "slurm":
            if not float(value).is_integer():
                raise LaunchError(f"--cell-gpus {value:g}: Slurm reserves whole GPUs")
            value = int(value)
        options[param] = value
    return make_launcher(name, **options)
