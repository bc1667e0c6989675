"""Studies built from the library: the demo and ablation grids, and where their cells run.

Names load their module on first use (the command line's ``--help`` imports no torch).
"""

from .._lazy import lazy_exports

_NAMES = {
    "AblationResult": ".ablate",
    "run_grid": ".ablate",
    "Cell": ".grid",
    "Grid": ".grid",
    "load_grid": ".grid",
    "GridError": "..errors",
    "Launcher": ".launchers",
    "LocalLauncher": ".launchers",
    "RayLauncher": ".launchers",
    "SlurmLauncher": ".launchers",
    "make_launcher": ".launchers",
}

__all__ = sorted(_NAMES)

__getattr__, __dir__ = lazy_exports(__name__, _NAMES, globals())
