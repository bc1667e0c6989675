"""Studies built from the library: the demo and ablation grids, and where their cells run."""

from .ablate import AblationResult, run_grid
from .grid import Cell, Grid, GridError, load_grid
from .launchers import Launcher, LocalLauncher, RayLauncher, SlurmLauncher, make_launcher

__all__ = [
    "AblationResult",
    "Cell",
    "Grid",
    "GridError",
    "Launcher",
    "LocalLauncher",
    "RayLauncher",
    "SlurmLauncher",
    "load_grid",
    "make_launcher",
    "run_grid",
]
