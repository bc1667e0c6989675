"""Studies built from the library: the demo and ablation grids."""

from .ablate import AblationResult, run_grid
from .grid import Cell, Grid, GridError, load_grid

__all__ = ["AblationResult", "Cell", "Grid", "GridError", "load_grid", "run_grid"]
