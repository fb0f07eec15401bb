"""Deterministic synthetic scenes: imagery, labelled polygons, centroids and a class raster.

The generator is meant for tests, benchmarks and demos. Objects (buildings, trees and water
bodies) are placed on a regular grid of cells, at most one per cell, so they never overlap.
Rasters are written block by block, so memory use does not grow with the raster size beyond
the list of objects.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import affine
import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.windows import Window

__all__ = [
    "CHANGE_CLASSES",
    "SCENE_CLASSES",
    "ChangeScene",
    "SceneClass",
    "SyntheticScene",
    "change_classes",
    "make_change_scene",
    "make_scene",
]


@dataclass(frozen=True)
class SceneClass:
    """A class of objects in a synthetic scene.

    Attributes:
        value: Class value burnt into the class raster and stored in ``ClassValue``.
        name: Class name stored in ``ClassName``.
        color: RGB colour of the class in the imagery (0-255 scale).
    """

    value: int
    name: str
    color: tuple[int, int, int]


SCENE_CLASSES: tuple[SceneClass, ...] = (
    SceneClass(1, "building", (200, 60, 50)),
    SceneClass(2, "tree", (40, 140, 40)),
    SceneClass(3, "water", (40, 80, 200)),
)


@dataclass(frozen=True)
class SyntheticScene:
    """Paths and georeferencing of a scene written by :func:`make_scene`.

    Attributes:
        raster_path: Multi-band GeoTIFF imagery.
        polygons_path: GeoPackage of object polygons with fields ``ClassValue`` (int32) and
            ``ClassName`` (str).
        points_path: GeoPackage of object centroids, same order and fields as the polygons.
        class_raster_path: Single-band uint8 GeoTIFF of class values (0 = background) with a
            colour table.
        classes: The classes that may occur in the scene.
        crs: CRS of the rasters and vector files, or None for pixel coordinates.
        transform: Affine transform of the rasters (identity when ``crs`` is None).
        width: Raster width in pixels.
        height: Raster height in pixels.
    """

    raster_path: Path
    polygons_path: Path
    points_path: Path
    class_raster_path: Path
    classes: tuple[SceneClass, ...]
    crs: str | None
    transform: affine.Affine
    width: int
    height: int


_TILE = 256
_MARGIN = 2.0
_NOISE_SIGMA = 6.0
_DTYPES = ("uint8", "uint16", "float32")
_GPKG_DATE = "2000-01-01T00:00:00.000Z"

# Per-class (red, green, blue, nir) on a 0-255 scale; row = class value, row 0 unused.
_CLASS_TONES = np.array(
    [[0.0, 0.0, 0.0, 0.0]]
    + [[*c.color, nir] for c, nir in zip(SCENE_CLASSES, (90, 210, 20), strict=True)],
    dtype=np.float32,
)
_SOIL = np.array([150.0, 120.0, 85.0, 110.0], dtype=np.float32)
_GRASS = np.array([95.0, 125.0, 60.0, 170.0], dtype=np.float32)


def make_scene(
    out_dir: str | Path,
    width: int = 512,
    height: int = 512,
    bands: int = 3,
    dtype: str = "uint8",
    seed: int = 0,
    crs: str | None = "EPSG:32617",
    pixel_size: float = 0.5,
    origin: tuple[float, float] = (400000.0, 3300000.0),
    cell: int = 64,
    fill: float = 0.6,
    nodata: float | None = None,
    nodata_border: int = 0,
    block_size: int = 512,
    name: str = "scene",
) -> SyntheticScene:
    """Write a deterministic synthetic scene to ``out_dir``.

    Objects are placed on a grid of ``cell`` x ``cell`` pixel cells (partial cells at the right
    and bottom edges included); each cell holds an object with probability ``fill``, lying
    inside the cell with a 2 px margin. Buildings are rectangles (10-40 px sides, half of them
    rotated), trees are circles (radius 5-15 px) and water bodies are star-shaped polygons of
    8-12 vertices, 20 px to ``cell`` - 4 px across. Shapes shrink to fit small cells.

    Pixel values are the class colour (or a soil/grass background tone) plus Gaussian noise.
    Band 4 is near-infrared; bands 5 and up are fixed mixtures of bands 1-4. The noise comes
    from 256 x 256 tiles, each drawn from a generator seeded by ``(seed, tile row, tile
    column)``, so the output depends neither on block order nor on ``block_size``.

    Written files, named after ``name``: ``{name}.tif`` (imagery, tiled, uncompressed),
    ``{name}_classes.tif`` (class raster, tiled, DEFLATE), ``{name}_polygons.gpkg`` and
    ``{name}_points.gpkg`` (layer ``name``, features in row-major cell order). Existing files
    are replaced. The same arguments give byte-identical files.

    Args:
        out_dir: Output directory, created if missing.
        width: Raster width in pixels.
        height: Raster height in pixels.
        bands: Number of imagery bands (>= 1).
        dtype: Imagery data type: ``"uint8"`` (0-255), ``"uint16"`` (0-10000) or
            ``"float32"`` (reflectance 0-1).
        seed: Seed of all random draws.
        crs: CRS of the outputs. None writes rasters with no CRS and an identity transform,
            and vector files in pixel coordinates (y down) with no CRS.
        pixel_size: Pixel size in CRS units (ignored when ``crs`` is None).
        origin: Map coordinates (x, y) of the upper-left corner (ignored when ``crs`` is None).
        cell: Size of the placement cells in pixels.
        fill: Probability that a cell holds an object.
        nodata: Nodata value of the imagery, or None. Ordinary pixels never take this value.
        nodata_border: Width in pixels of a nodata band along the left and top edges. Requires
            ``nodata``; no object touches the band.
        block_size: Size of the blocks written at once; affects memory use, not the output.
        name: Base name of the output files and of the vector layers.

    Returns:
        The paths and georeferencing of the written scene.

    Raises:
        ValueError: If an argument is out of range or ``nodata`` does not fit ``dtype``.
    """
    _check_args(width, height, bands, dtype, cell, fill, nodata, nodata_border, block_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if crs is None:
        transform = affine.Affine.identity()
    else:
        transform = affine.Affine(pixel_size, 0.0, origin[0], 0.0, -pixel_size, origin[1])

    pixel_geoms, values = _place_objects(width, height, seed, cell, fill, nodata_border)
    geoms = shapely.transform(pixel_geoms, lambda xy: _apply(transform, xy))
    del pixel_geoms
    scene = _scene_paths(out_dir, name, crs, transform, width, height)
    _write_scene(scene, geoms, values, bands, dtype, seed, nodata, nodata_border, block_size)
    return scene


def _scene_paths(
    out_dir: Path,
    name: str,
    crs: str | None,
    transform: affine.Affine,
    width: int,
    height: int,
) -> SyntheticScene:
    return SyntheticScene(
        raster_path=out_dir / f"{name}.tif",
        polygons_path=out_dir / f"{name}_polygons.gpkg",
        points_path=out_dir / f"{name}_points.gpkg",
        class_raster_path=out_dir / f"{name}_classes.tif",
        classes=SCENE_CLASSES,
        crs=crs,
        transform=transform,
        width=width,
        height=height,
    )


def _write_scene(
    scene: SyntheticScene,
    geoms: np.ndarray,
    values: np.ndarray,
    bands: int,
    dtype: str,
    seed: int,
    nodata: float | None,
    nodata_border: int,
    block_size: int,
    pattern_scale: float = 1.0,
) -> None:
    """Write the vectors and rasters of objects given in map coordinates."""
    name = scene.raster_path.stem
    _write_vectors(scene, geoms, values, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        _write_rasters(
            scene,
            geoms,
            values,
            bands,
            dtype,
            seed,
            nodata,
            nodata_border,
            block_size,
            pattern_scale,
        )


CHANGE_CLASSES: tuple[SceneClass, ...] = (
    SceneClass(1, "added", (250, 200, 30)),
    SceneClass(2, "removed", (170, 40, 170)),
    SceneClass(3, "changed", (30, 210, 230)),
)
"""The change classes of a two-date scene: object added, object removed, class changed."""


@dataclass(frozen=True)
class ChangeScene:
    """Two dates of one synthetic area written by :func:`make_change_scene`.

    Attributes:
        before: The first date (its files carry the suffix ``_before``).
        after: The second date, on a grid of another pixel size over the same area.
        change_raster_path: Change class per pixel of the first date's grid (uint8,
            :data:`CHANGE_CLASSES`, 0 = no change), with a colour table.
        change_polygons_path: GeoPackage of the changed areas, fields ``ClassValue`` and
            ``ClassName`` (:data:`CHANGE_CLASSES`).
        counts: How many objects were ``added``, ``removed`` and ``changed`` (class).
    """

    before: SyntheticScene
    after: SyntheticScene
    change_raster_path: Path
    change_polygons_path: Path
    counts: dict[str, int]
    classes: tuple[SceneClass, ...] = CHANGE_CLASSES


def change_classes(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Change class of each pixel from its scene classes at two dates (0 = no change).

    1 ``added``: background, then an object; 2 ``removed``: an object, then background;
    3 ``changed``: objects of two classes.
    """
    before, after = np.asarray(before), np.asarray(after)
    out = np.zeros(np.broadcast_shapes(before.shape, after.shape), dtype=np.uint8)
    out[(before == 0) & (after > 0)] = 1
    out[(before > 0) & (after == 0)] = 2
    out[(before > 0) & (after > 0) & (before != after)] = 3
    return out


def make_change_scene(
    out_dir: str | Path,
    width: int = 512,
    height: int = 512,
    bands: int = 3,
    dtype: str = "uint8",
    seed: int = 0,
    crs: str = "EPSG:32617",
    pixel_size: float = 0.5,
    after_pixel_size: float = 0.6,
    origin: tuple[float, float] = (400000.0, 3300000.0),
    cell: int = 64,
    fill: float = 0.6,
    change: float = 0.4,
    block_size: int = 512,
    name: str = "change",
) -> ChangeScene:
    """Write a deterministic two-date scene with known changes to ``out_dir``.

    The first date is :func:`make_scene`'s scene. On the second date, each object is removed
    with probability ``change / 2``, replaced by an object of another class (another shape
    in its cell) with probability ``change / 2``, and kept otherwise; each empty cell gets a
    new object with probability ``change / 2``. The second date is written on a grid of
    ``after_pixel_size`` over the same area, with its own noise, and the background pattern at
    the same map positions. The change raster is computed on the first date's grid with
    :func:`change_classes` from both dates' objects.

    Files, named after ``name``: ``{name}_before*`` and ``{name}_after*`` (as
    :func:`make_scene` names its files), ``{name}_change.tif`` and ``{name}_change.gpkg``.

    Args:
        out_dir: Output directory, created if missing.
        width: First-date width in pixels.
        height: First-date height in pixels.
        bands: Imagery bands of both dates.
        dtype: Imagery data type (see :func:`make_scene`).
        seed: Seed of all random draws.
        crs: CRS of every output.
        pixel_size: First-date pixel size in CRS units.
        after_pixel_size: Second-date pixel size in CRS units.
        origin: Map coordinates of the upper-left corner of both dates.
        cell: Size of the placement cells in first-date pixels.
        fill: Probability that a cell holds an object on the first date.
        change: Probability of a change per cell (see above).
        block_size: Size of the blocks written at once; affects memory use, not the output.
        name: Base name of the output files.

    Raises:
        ValueError: If an argument is out of range.
    """
    _check_args(width, height, bands, dtype, cell, fill, None, 0, block_size)
    if not 0.0 <= change <= 1.0:
        raise ValueError(f"change must be in [0, 1], got {change}")
    if not (pixel_size > 0 and after_pixel_size > 0):
        raise ValueError("pixel sizes must be positive")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    transform = affine.Affine(pixel_size, 0.0, origin[0], 0.0, -pixel_size, origin[1])
    before_px, before_values = _place_objects(width, height, seed, cell, fill, 0)
    after_px, after_values, events = _changed_objects(
        before_px, before_values, width, height, seed, cell, change
    )

    def to_map(geoms: np.ndarray) -> np.ndarray:
        return shapely.transform(geoms, lambda xy: _apply(transform, xy))

    before_geoms, after_geoms = to_map(before_px), to_map(after_px)
    before = _scene_paths(out_dir, f"{name}_before", crs, transform, width, height)
    _write_scene(before, before_geoms, before_values, bands, dtype, seed, None, 0, block_size)
    scale = after_pixel_size / pixel_size
    after = _scene_paths(
        out_dir,
        f"{name}_after",
        crs,
        affine.Affine(after_pixel_size, 0.0, origin[0], 0.0, -after_pixel_size, origin[1]),
        max(1, round(width / scale)),
        max(1, round(height / scale)),
    )
    _write_scene(
        after, after_geoms, after_values, bands, dtype, seed + 1, None, 0, block_size, scale
    )
    scene = ChangeScene(
        before=before,
        after=after,
        change_raster_path=out_dir / f"{name}_change.tif",
        change_polygons_path=out_dir / f"{name}_change.gpkg",
        counts={k: events.count(k) for k in ("added", "removed", "changed")},
    )
    _write_change(scene, before_geoms, before_values, after_geoms, after_values, block_size)
    return scene


def _changed_objects(
    geoms: np.ndarray,
    values: np.ndarray,
    width: int,
    height: int,
    seed: int,
    cell: int,
    change: float,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The second date's objects (pixel space of the first date) and the change events."""
    rng = np.random.default_rng([seed, 2])
    cells = {}
    for geom, value in zip(geoms, values, strict=True):
        c = shapely.centroid(geom)
        cells[(int(c.y // cell), int(c.x // cell))] = (geom, int(value))
    out_geoms: list[shapely.Geometry] = []
    out_values: list[int] = []
    events: list[str] = []
    for row in range(math.ceil(height / cell)):
        y0, y1 = row * cell, min((row + 1) * cell, height)
        for col in range(math.ceil(width / cell)):
            x0, x1 = col * cell, min((col + 1) * cell, width)
            box = (x0 + _MARGIN, y0 + _MARGIN, x1 - _MARGIN, y1 - _MARGIN)
            draw = rng.random()
            old = cells.get((row, col))
            if old is not None and draw >= change:
                out_geoms.append(old[0])
                out_values.append(old[1])
                continue
            if old is not None and draw < change / 2:
                events.append("removed")
                continue
            if old is None and draw >= change / 2:
                continue
            choices = [c for c in SCENE_CLASSES if old is None or c.value != old[1]]
            cls = choices[int(rng.integers(len(choices)))]
            geom = _SHAPERS[cls.name](rng, box, cell)
            if geom is None:
                if old is not None:
                    events.append("removed")
                continue
            events.append("added" if old is None else "changed")
            out_geoms.append(geom)
            out_values.append(cls.value)
    return np.array(out_geoms, dtype=object), np.array(out_values, dtype=np.int32), events


def _write_change(
    scene: ChangeScene,
    before_geoms: np.ndarray,
    before_values: np.ndarray,
    after_geoms: np.ndarray,
    after_values: np.ndarray,
    block_size: int,
) -> None:
    """The change raster on the first date's grid, and the changed areas as polygons."""
    grid = scene.before
    before_tree, after_tree = shapely.STRtree(before_geoms), shapely.STRtree(after_geoms)
    path = scene.change_raster_path
    path.unlink(missing_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype="uint8",
        crs=grid.crs,
        transform=grid.transform,
        tiled=True,
        blockxsize=_TILE,
        blockysize=_TILE,
        compress="deflate",
    ) as out:
        out.descriptions = ("change",)
        colormap = {0: (0, 0, 0, 0)}
        colormap.update({c.value: (*c.color, 255) for c in CHANGE_CLASSES})
        out.write_colormap(1, colormap)
        for row_off in range(0, grid.height, block_size):
            for col_off in range(0, grid.width, block_size):
                window = Window(
                    col_off,
                    row_off,
                    min(block_size, grid.width - col_off),
                    min(block_size, grid.height - row_off),
                )
                first = _rasterize_block(
                    before_tree, before_geoms, before_values, window, grid.transform
                )
                second = _rasterize_block(
                    after_tree, after_geoms, after_values, window, grid.transform
                )
                out.write(change_classes(first, second), 1, window=window)
    before_all = shapely.union_all(before_geoms)
    after_all = shapely.union_all(after_geoms)
    pieces = [
        (1, shapely.difference(after_all, before_all)),
        (2, shapely.difference(before_all, after_all)),
    ]
    for b_geom, b_value in zip(before_geoms, before_values, strict=True):
        hits = after_tree.query(b_geom, predicate="intersects")
        for i in hits:
            if int(after_values[i]) != int(b_value):
                pieces.append((3, shapely.intersection(b_geom, after_geoms[i])))
    parts = [(v, g) for v, part in pieces for g in shapely.get_parts(part) if g.area > 0]
    names = {c.value: c.name for c in CHANGE_CLASSES}
    frame = gpd.GeoDataFrame(
        {
            "ClassValue": np.array([v for v, _ in parts], dtype=np.int32),
            "ClassName": [names[v] for v, _ in parts],
        },
        geometry=[g for _, g in parts],
        crs=grid.crs,
    )
    _write_gpkg(frame, scene.change_polygons_path, "change", "Polygon")


def _check_args(
    width: int,
    height: int,
    bands: int,
    dtype: str,
    cell: int,
    fill: float,
    nodata: float | None,
    nodata_border: int,
    block_size: int,
) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1, got {width} x {height}")
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    if cell < 1:
        raise ValueError(f"cell must be >= 1, got {cell}")
    if not 0.0 <= fill <= 1.0:
        raise ValueError(f"fill must be in [0, 1], got {fill}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if nodata_border < 0:
        raise ValueError(f"nodata_border must be >= 0, got {nodata_border}")
    if nodata_border > 0 and nodata is None:
        raise ValueError("nodata_border > 0 requires a nodata value")
    if nodata is not None:
        if math.isnan(nodata):
            raise ValueError("nodata must not be NaN")
        if dtype != "float32":
            info = np.iinfo(dtype)
            if nodata != int(nodata) or not info.min <= nodata <= info.max:
                raise ValueError(f"nodata {nodata} is not a valid {dtype} value")


def _place_objects(
    width: int, height: int, seed: int, cell: int, fill: float, nodata_border: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the objects, in row-major cell order, as pixel-space polygons and class values."""
    rng = np.random.default_rng(seed)
    geoms: list[shapely.Polygon] = []
    values: list[int] = []
    for row in range(math.ceil(height / cell)):
        y0, y1 = row * cell, min((row + 1) * cell, height)
        for col in range(math.ceil(width / cell)):
            x0, x1 = col * cell, min((col + 1) * cell, width)
            if rng.random() >= fill:
                continue
            cls = SCENE_CLASSES[int(rng.integers(len(SCENE_CLASSES)))]
            box = (x0 + _MARGIN, y0 + _MARGIN, x1 - _MARGIN, y1 - _MARGIN)
            geom = _SHAPERS[cls.name](rng, box, cell)
            if geom is None:
                continue
            minx, miny, _, _ = geom.bounds
            if minx < nodata_border or miny < nodata_border:
                continue
            geoms.append(geom)
            values.append(cls.value)
    return np.array(geoms, dtype=object), np.array(values, dtype=np.int32)


def _building(
    rng: np.random.Generator, box: tuple[float, float, float, float], cell: int
) -> shapely.Polygon | None:
    w, h = rng.uniform(10.0, 40.0, 2)
    angle = rng.uniform(0.0, math.pi) if rng.random() < 0.5 else 0.0
    u, v = rng.random(2)
    cos, sin = abs(math.cos(angle)), abs(math.sin(angle))
    avail_w, avail_h = box[2] - box[0], box[3] - box[1]
    scale = min(1.0, avail_w / (w * cos + h * sin), avail_h / (w * sin + h * cos))
    w, h = w * scale, h * scale
    if min(w, h) < 3.0:
        return None
    half_w, half_h = (w * cos + h * sin) / 2, (w * sin + h * cos) / 2
    cx = box[0] + half_w + u * (avail_w - 2 * half_w)
    cy = box[1] + half_h + v * (avail_h - 2 * half_h)
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    c, s = math.cos(angle), math.sin(angle)
    rotated = corners @ np.array([[c, s], [-s, c]])
    return shapely.Polygon(rotated + np.array([cx, cy]))


def _tree(
    rng: np.random.Generator, box: tuple[float, float, float, float], cell: int
) -> shapely.Polygon | None:
    radius = rng.uniform(5.0, 15.0)
    u, v = rng.random(2)
    avail_w, avail_h = box[2] - box[0], box[3] - box[1]
    radius = min(radius, avail_w / 2, avail_h / 2)
    if radius < 2.0:
        return None
    cx = box[0] + radius + u * (avail_w - 2 * radius)
    cy = box[1] + radius + v * (avail_h - 2 * radius)
    return shapely.Point(cx, cy).buffer(radius, quad_segs=16)


def _water(
    rng: np.random.Generator, box: tuple[float, float, float, float], cell: int
) -> shapely.Polygon | None:
    diameter = rng.uniform(20.0, max(20.0, cell - 2 * _MARGIN))
    n = int(rng.integers(8, 13))
    jitter = rng.uniform(-0.3, 0.3, n)
    radii = rng.uniform(0.55, 1.0, n)
    u, v = rng.random(2)
    avail_w, avail_h = box[2] - box[0], box[3] - box[1]
    radius = min(diameter, avail_w, avail_h) / 2
    if radius < 3.0:
        return None
    cx = box[0] + radius + u * (avail_w - 2 * radius)
    cy = box[1] + radius + v * (avail_h - 2 * radius)
    theta = (np.arange(n) + jitter) * (2 * math.pi / n)
    r = radius * radii
    return shapely.Polygon(np.column_stack([cx + r * np.cos(theta), cy + r * np.sin(theta)]))


_SHAPERS = {"building": _building, "tree": _tree, "water": _water}


def _apply(transform: affine.Affine, xy: np.ndarray) -> np.ndarray:
    """Apply an affine transform to an (n, 2) array of coordinates."""
    a, b, c, d, e, f = transform[:6]
    x, y = xy[:, 0], xy[:, 1]
    return np.column_stack([a * x + b * y + c, d * x + e * y + f])


def _write_vectors(scene: SyntheticScene, geoms: np.ndarray, values: np.ndarray, name: str) -> None:
    names = {c.value: c.name for c in SCENE_CLASSES}
    attrs = {"ClassValue": values, "ClassName": [names[int(v)] for v in values]}
    for path, geometry, geometry_type in (
        (scene.polygons_path, geoms, "Polygon"),
        (scene.points_path, shapely.centroid(geoms), "Point"),
    ):
        frame = gpd.GeoDataFrame(attrs, geometry=list(geometry), crs=scene.crs)
        _write_gpkg(frame, path, name, geometry_type)


def _write_gpkg(frame: gpd.GeoDataFrame, path: Path, layer: str, geometry_type: str) -> None:
    """Write a GeoPackage with a fixed timestamp, so that the same frame gives the same bytes."""
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _GPKG_DATE})
    try:
        path.unlink(missing_ok=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            pyogrio.write_dataframe(
                frame, path, layer=layer, driver="GPKG", geometry_type=geometry_type
            )
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


def _write_rasters(
    scene: SyntheticScene,
    geoms: np.ndarray,
    values: np.ndarray,
    bands: int,
    dtype: str,
    seed: int,
    nodata: float | None,
    nodata_border: int,
    block_size: int,
    pattern_scale: float = 1.0,
) -> None:
    tree = shapely.STRtree(geoms)
    common = {
        "driver": "GTiff",
        "width": scene.width,
        "height": scene.height,
        "crs": scene.crs,
        "transform": scene.transform,
        "tiled": True,
        "blockxsize": _TILE,
        "blockysize": _TILE,
        "BIGTIFF": "IF_SAFER",
    }
    for path in (scene.raster_path, scene.class_raster_path):
        path.unlink(missing_ok=True)
    with (
        rasterio.Env(GDAL_CACHEMAX=64),
        rasterio.open(
            scene.raster_path,
            "w",
            count=bands,
            dtype=dtype,
            nodata=nodata,
            interleave="pixel",
            **common,
        ) as img,
        rasterio.open(
            scene.class_raster_path,
            "w",
            count=1,
            dtype="uint8",
            compress="deflate",
            **common,
        ) as cls,
    ):
        img.descriptions = tuple(_band_names(bands))
        cls.descriptions = ("class",)
        colormap = {0: (0, 0, 0, 0)}
        colormap.update({c.value: (*c.color, 255) for c in SCENE_CLASSES})
        cls.write_colormap(1, colormap)
        for row_off in range(0, scene.height, block_size):
            for col_off in range(0, scene.width, block_size):
                window = Window(
                    col_off,
                    row_off,
                    min(block_size, scene.width - col_off),
                    min(block_size, scene.height - row_off),
                )
                classes = _rasterize_block(tree, geoms, values, window, scene.transform)
                cls.write(classes, 1, window=window)
                pixels = _pixels(classes, window, bands, seed, pattern_scale)
                img.write(_to_dtype(pixels, dtype, nodata, nodata_border, window), window=window)


def _band_names(bands: int) -> list[str]:
    names = ["red", "green", "blue", "nir"]
    return [names[i] if i < len(names) else f"band{i + 1}" for i in range(bands)]


def _rasterize_block(
    tree: shapely.STRtree,
    geoms: np.ndarray,
    values: np.ndarray,
    window: Window,
    transform: affine.Affine,
) -> np.ndarray:
    shape = (int(window.height), int(window.width))
    a, b, c, d, e, f = transform[:6]
    col_off, row_off = int(window.col_off), int(window.row_off)
    block_transform = affine.Affine(
        a, b, c + a * col_off + b * row_off, d, e, f + d * col_off + e * row_off
    )
    corners = _apply(block_transform, np.array([[0, 0], [shape[1], shape[0]]], dtype=float))
    hits = np.sort(tree.query(shapely.box(*corners.min(axis=0), *corners.max(axis=0))))
    if hits.size == 0:
        return np.zeros(shape, dtype=np.uint8)
    return rasterize(
        zip(geoms[hits], values[hits].tolist(), strict=True),
        out_shape=shape,
        transform=block_transform,
        fill=0,
        dtype="uint8",
    )


def _pixels(
    classes: np.ndarray, window: Window, bands: int, seed: int, pattern_scale: float = 1.0
) -> np.ndarray:
    """Pixel values of a block on a 0-255 scale, shape (bands, rows, cols), float32.

    ``pattern_scale`` is the pixel size relative to the scene's first date: the background
    pattern then lies at the same map positions on a grid of another pixel size.
    """
    rows = np.arange(window.row_off, window.row_off + window.height, dtype=np.float32)[:, None]
    cols = np.arange(window.col_off, window.col_off + window.width, dtype=np.float32)[None, :]
    if pattern_scale != 1.0:
        rows, cols = rows * np.float32(pattern_scale), cols * np.float32(pattern_scale)
    grass = (
        0.5 + 0.3 * np.sin(cols / 41.0) * np.cos(rows / 29.0) + 0.2 * np.sin((rows + cols) / 97.0)
    )
    background = _SOIL[:, None, None] + grass[None] * (_GRASS - _SOIL)[:, None, None]
    base = np.where(classes[None] == 0, background, np.moveaxis(_CLASS_TONES[classes], -1, 0))
    if bands <= 4:
        tones = base[:bands]
    else:
        tones = np.concatenate([base, np.tensordot(_mix_weights(bands), base, axes=1)])
    return tones + _NOISE_SIGMA * _noise(window, bands, seed)


def _mix_weights(bands: int) -> np.ndarray:
    """Fixed weights of bands 5 and up as mixtures of bands 1-4, shape (bands - 4, 4)."""
    k = np.arange(5, bands + 1, dtype=np.float32)[:, None]
    j = np.arange(1, 5, dtype=np.float32)[None, :]
    weights = 1.0 + np.mod(k * j + k, 4.0)
    return weights / weights.sum(axis=1, keepdims=True)


def _noise(window: Window, bands: int, seed: int) -> np.ndarray:
    """Standard normal noise of a block, assembled from fixed, independently seeded tiles."""
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    out = np.empty((bands, r1 - r0, c1 - c0), dtype=np.float32)
    for tile_row in range(r0 // _TILE, (r1 - 1) // _TILE + 1):
        for tile_col in range(c0 // _TILE, (c1 - 1) // _TILE + 1):
            rng = np.random.default_rng([seed, tile_row, tile_col])
            tile = rng.standard_normal((bands, _TILE, _TILE), dtype=np.float32)
            tr0, tc0 = tile_row * _TILE, tile_col * _TILE
            ra, rb = max(r0, tr0), min(r1, tr0 + _TILE)
            ca, cb = max(c0, tc0), min(c1, tc0 + _TILE)
            out[:, ra - r0 : rb - r0, ca - c0 : cb - c0] = tile[
                :, ra - tr0 : rb - tr0, ca - tc0 : cb - tc0
            ]
    return out


def _to_dtype(
    pixels: np.ndarray, dtype: str, nodata: float | None, nodata_border: int, window: Window
) -> np.ndarray:
    if dtype == "uint8":
        out, top, step = np.clip(np.rint(pixels), 0, 255).astype(np.uint8), 255, 1
    elif dtype == "uint16":
        scaled = np.rint(pixels * (10000.0 / 255.0))
        out, top, step = np.clip(scaled, 0, 10000).astype(np.uint16), 10000, 1
    else:
        out, top, step = np.clip(pixels / 255.0, 0.0, 1.0).astype(np.float32), 1.0, 1e-3
    if nodata is None:
        return out
    replacement = nodata + step if nodata + step <= top else nodata - step
    out[out == nodata] = replacement
    if nodata_border > 0:
        rows = int(window.row_off) + np.arange(out.shape[1])
        cols = int(window.col_off) + np.arange(out.shape[2])
        edge = (rows[:, None] < nodata_border) | (cols[None, :] < nodata_border)
        out[:, edge] = nodata
    return out
