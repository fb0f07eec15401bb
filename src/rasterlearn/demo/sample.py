"""The bundled NEON sample and its split into a training part and a held-out part.

The 400 x 400 px tile (0.1 m pixels, 61 tree crowns) is split by a vertical line at
:data:`SPLIT_COLUMN`: trees whose centre lies left of it are training trees, the others
held-out trees (see :func:`split_sample`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import geopandas as gpd
import rasterio
import shapely

SPLIT_COLUMN = 300
"""Trees centred left of this pixel column are for training, the others are held out."""


def sample_paths() -> tuple[Path, Path]:
    """The bundled NEON OSBS_029 tile and its tree-crown polygons."""
    root = Path(str(resources.files("rasterlearn") / "sample_data"))
    return root / "OSBS_029.tif", root / "OSBS_029_trees.gpkg"


@dataclass(frozen=True)
class Split:
    """The training and held-out parts of the sample, as extents and label files.

    Attributes:
        train_extent: ``(xmin, ymin, xmax, ymax)`` of the training part.
        heldout_extent: ``(xmin, ymin, xmax, ymax)`` of the held-out part.
        train_columns: Pixel columns ``[start, stop)`` of the training part.
        heldout_columns: Pixel columns ``[start, stop)`` of the held-out part.
        train_trees: Training tree crowns (detector labels).
        train_pixels: Training tree crowns (class 1) and background (class 2) polygons.
        heldout_trees: Held-out tree crowns, clipped to the held-out part (detection truth).
        heldout_pixels: Tree crowns (1) and background (2) clipped to the held-out part
            (pixel reference).
        num_train_trees: Trees used for training.
        num_heldout_trees: Trees held out.
    """

    train_extent: tuple[float, float, float, float]
    heldout_extent: tuple[float, float, float, float]
    train_columns: tuple[int, int]
    heldout_columns: tuple[int, int]
    train_trees: Path
    train_pixels: Path
    heldout_trees: Path
    heldout_pixels: Path
    num_train_trees: int
    num_heldout_trees: int


def _with_background(trees: gpd.GeoDataFrame, area: shapely.Polygon) -> gpd.GeoDataFrame:
    """Tree crowns in ``area`` as class 1 and the rest of ``area`` as class 2 (background)."""
    crowns = trees.geometry.intersection(area)
    crowns = crowns[~crowns.is_empty]
    background = area.difference(shapely.union_all(crowns.values))
    return gpd.GeoDataFrame(
        {
            "ClassValue": [1] * len(crowns) + [2],
            "ClassName": ["Tree"] * len(crowns) + ["Background"],
        },
        geometry=[*crowns.values, background],
        crs=trees.crs,
    )


def split_sample(folder: Path, split_column: int = SPLIT_COLUMN) -> Split:
    """Cut the sample into a training part and a held-out part and write their labels.

    Trees whose centre lies left of ``split_column`` are training trees, the others held-out
    trees. The training part ends where the first held-out crown begins, so that no pixel of
    a held-out tree is in the training chips; the held-out part starts at ``split_column``.
    Training crowns that reach into the held-out part are left out of the detection truth
    (less than half of each lies there) but their pixels count as tree pixels.

    Args:
        folder: Where the label files are written.
        split_column: First pixel column of the held-out part.

    Returns:
        The extents and the label files.
    """
    raster, trees_path = sample_paths()
    with rasterio.open(raster) as src:
        transform, width, height = src.transform, src.width, src.height
    trees = gpd.read_file(trees_path)
    x_split = (transform @ (split_column, 0))[0]
    held = trees.geometry.centroid.x >= x_split
    crown_column = (~transform @ (trees[held].total_bounds[0], 0))[0]
    first_held = min(split_column, math.floor(crown_column + 1e-6))
    top = transform.f
    bottom = (transform @ (0, height))[1]

    def x_of(col: int) -> float:
        return (transform @ (col, 0))[0]

    train_extent = (x_of(0), bottom, x_of(first_held), top)
    heldout_extent = (x_split, bottom, x_of(width), top)
    train_box, heldout_box = shapely.box(*train_extent), shapely.box(*heldout_extent)

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        name: folder / f"{name}.gpkg"
        for name in ("train_trees", "train_pixels", "heldout_trees", "heldout_pixels")
    }
    train_trees = trees[~held].reset_index(drop=True)
    heldout_trees = trees[held].reset_index(drop=True)
    heldout_trees = heldout_trees.set_geometry(heldout_trees.geometry.intersection(heldout_box))
    frames = {
        "train_trees": train_trees,
        "train_pixels": _with_background(train_trees, train_box),
        "heldout_trees": heldout_trees,
        "heldout_pixels": _with_background(trees, heldout_box),
    }
    for name, frame in frames.items():
        paths[name].unlink(missing_ok=True)
        frame.to_file(paths[name], driver="GPKG")
    return Split(
        train_extent=train_extent,
        heldout_extent=heldout_extent,
        train_columns=(0, first_held),
        heldout_columns=(split_column, width),
        train_trees=paths["train_trees"],
        train_pixels=paths["train_pixels"],
        heldout_trees=paths["heldout_trees"],
        heldout_pixels=paths["heldout_pixels"],
        num_train_trees=len(train_trees),
        num_heldout_trees=len(heldout_trees),
    )
