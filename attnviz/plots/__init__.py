"""Pictures of feature maps, CAMs and model comparisons (matplotlib only, no pyplot).

Every figure function returns a :class:`matplotlib.figure.Figure` and, given ``path``, also
saves it as PNG. Inputs may be torch tensors (any device or dtype) or numpy arrays.
"""

from ._common import (
    ArrayLike,
    figure_to_array,
    figure_to_png_bytes,
    finish,
    new_figure,
    save_figure,
    tile,
    to_numpy,
    to_uint8,
)
from .cams import cam_grid, cam_panel, overlay, overlay_batch, query_grid
from .compare import (
    bar_chart,
    forest_plot,
    gate_histograms,
    gate_profiles,
    metric_curves,
    scatter_tradeoff,
)
from .features import compare_feature_maps, feature_grid, feature_grid_array, save_channels

__all__ = [
    "ArrayLike",
    "bar_chart",
    "cam_grid",
    "cam_panel",
    "compare_feature_maps",
    "feature_grid",
    "feature_grid_array",
    "figure_to_array",
    "figure_to_png_bytes",
    "finish",
    "forest_plot",
    "gate_histograms",
    "gate_profiles",
    "metric_curves",
    "new_figure",
    "overlay",
    "overlay_batch",
    "query_grid",
    "save_channels",
    "save_figure",
    "scatter_tradeoff",
    "tile",
    "to_numpy",
    "to_uint8",
]
