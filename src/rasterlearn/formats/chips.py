"""The export folder as ArcGIS lays it out: chips, labels, map.txt and the metadata files.

``ExportWriter`` writes one chip at a time (from any thread), collects what the metadata files
need, and writes ``map.txt``, ``stats.txt``, ``esri_accumulated_stats.json`` and
``esri_model_definition.emd`` at the end.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from rasterlearn.formats.chip_images import LABEL_IMAGE_FORMATS, ChipImageFormat, write_chip_image
from rasterlearn.formats.labels import ChipLabels, kitti_lines, voc_xml
from rasterlearn.formats.metadata_formats import MetadataFormat
from rasterlearn.geo.stats import BandStats, merge_band_stats

MAP_FILE = "map.txt"
STATS_FILE = "stats.txt"
ACCUMULATED_STATS_FILE = "esri_accumulated_stats.json"
EMD_FILE = "esri_model_definition.emd"
CHIP_NAME_DIGITS = 9
SECOND_IMAGES = "images2"
"""The folder of the additional raster's chips (the "after" image of a change pair)."""


@dataclass(frozen=True)
class ClassInfo:
    """A row of the class table: value, name and display colour (None = no colour)."""

    value: int
    name: str
    color: tuple[int, int, int] | None = None


def map_line(tokens: list[str]) -> str:
    """A ``map.txt`` line as ArcGIS writes it: backslash paths, two spaces, a trailing space."""
    return "  ".join(str(PureWindowsPath(t)) for t in tokens) + " \n"


def folder_safe(name: str) -> str:
    """A class name usable as a folder name (RCNN_Masks, Imagenet)."""
    return "".join("_" if c in '<>:"/\\|?*' else c for c in name).strip() or "_"


@dataclass
class Summary:
    """Running ``{Min, Max, Mean, Sum, Count}`` as in ArcGIS's statistics files."""

    count: int = 0
    total: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def to_json(self) -> dict[str, float]:
        if not self.count:
            return {"Min": 0, "Max": 0, "Mean": 0, "Sum": 0, "Count": 0}
        return {
            "Min": self.min,
            "Max": self.max,
            "Mean": self.mean,
            "Sum": self.total,
            "Count": self.count,
        }


@dataclass
class _ClassTally:
    images: int = 0
    items: int = 0  # features, or pixels for pixel formats
    sizes: Summary = field(default_factory=Summary)


@dataclass(frozen=True)
class ChipGeoref:
    """Where a chip lies: its transform and CRS (None when not georeferenced)."""

    transform: Affine | None
    crs: CRS | None
    nodata: float | None


@dataclass(frozen=True)
class ChipTally:
    """What one chip adds to the export statistics, small enough to send between processes.

    Attributes:
        per_image: Classes (pixel formats) or features in the chip.
        features: Features added to the total (0 for pixel formats).
        classes: Per class present: ``(value, items, sizes)``, items being features or pixels
            and sizes the feature areas (map units) or the pixel count, in label order.
    """

    per_image: int
    features: int
    classes: tuple[tuple[int, int, tuple[float, ...]], ...]


def chip_tally(kind: str, labels: ChipLabels) -> ChipTally | None:
    """Count a chip's labels per class, for a metadata format's label kind (None: no labels)."""
    if kind == "none":
        return None
    if kind == "pixels":
        values, counts = np.unique(labels.class_raster, return_counts=True)
        present = {int(v): int(n) for v, n in zip(values, counts, strict=True) if v != 0}
        return ChipTally(
            per_image=len(present),
            features=0,
            classes=tuple((v, n, (n,)) for v, n in present.items()),
        )
    if kind in ("multitile", "folder") or (kind == "tile" and not labels.objects):
        per_class: dict[int, list[float]] = {v: [] for v in labels.tile_classes}
    else:
        per_class = {}
        for o in labels.objects:
            per_class.setdefault(o.class_value, []).append(o.area)
    n_items = sum(len(a) or 1 for a in per_class.values())
    return ChipTally(
        per_image=n_items,
        features=n_items,
        classes=tuple((v, len(a) or 1, tuple(a)) for v, a in per_class.items()),
    )


class ExportWriter:
    """Writes chips and labels into an export folder and accumulates its statistics.

    Args:
        folder: The (temporary) output folder; created if missing.
        fmt: The metadata format.
        image_format: The chip image format.
        classes: The class table, in output order.
        create_folders: Create the folder and its ``images``/``labels`` subfolders (off for a
            writer on a cluster worker, which must not recreate a folder removed meanwhile).
        paired: Chips come in pairs (an additional input raster): the second of each pair
            goes to ``images2/`` under the same name, as ArcGIS writes change-detection and
            image-translation data.
    """

    def __init__(
        self,
        folder: Path,
        fmt: MetadataFormat,
        image_format: ChipImageFormat,
        classes: list[ClassInfo],
        *,
        create_folders: bool = True,
        paired: bool = False,
    ) -> None:
        self.folder = folder
        self.paired = paired
        self.fmt = fmt
        self.image_format = image_format
        self.label_format = LABEL_IMAGE_FORMATS[image_format.keyword]
        self.classes = classes
        self._class_index = {c.value: i for i, c in enumerate(classes)}
        self._lock = threading.Lock()
        self._map_lines: dict[int, str] = {}
        self._tallies = [_ClassTally() for _ in classes]
        self._per_image = Summary()
        self.band_stats: list[BandStats] = []
        self.band_stats2: list[BandStats] = []
        self.num_chips = 0
        self.num_features = 0
        if create_folders:
            (folder / "images").mkdir(parents=True, exist_ok=True)
            if paired:
                (folder / SECOND_IMAGES).mkdir(exist_ok=True)
            if fmt.labels not in ("none", "folder"):
                (folder / "labels").mkdir(exist_ok=True)

    def chip_stem(self, index: int) -> str:
        return f"{index:0{CHIP_NAME_DIGITS}d}"

    def write_chip(
        self,
        index: int,
        data: np.ndarray,
        georef: ChipGeoref,
        labels: ChipLabels,
        second: tuple[np.ndarray, ChipGeoref] | None = None,
    ) -> str:
        """Write chip ``index`` and its label files (safe to call from several threads).

        Args:
            index: The chip's number.
            data: Its pixels, ``(bands, rows, cols)``.
            georef: Where it lies.
            labels: Its labels.
            second: The additional raster's chip and georeference (``images2/``), when paired.

        Returns:
            The chip's ``map.txt`` line (also kept for :meth:`write_map`).
        """
        stem = self.chip_stem(index)
        ext = self.image_format.extension
        image_dir = "images"
        if self.fmt.labels == "folder":
            image_dir = f"images/{labels.tile_classes[0]}"
            (self.folder / image_dir).mkdir(exist_ok=True)
        image_rel = f"{image_dir}/{stem}{ext}"
        write_chip_image(
            self.folder / image_rel,
            data,
            self.image_format,
            georef.transform,
            georef.crs,
            georef.nodata,
        )
        if second is not None:
            data2, georef2 = second
            write_chip_image(
                self.folder / SECOND_IMAGES / f"{stem}{ext}",
                data2,
                self.image_format,
                georef2.transform,
                georef2.crs,
                georef2.nodata,
            )
        tokens = [image_rel, *self._write_labels(stem, image_rel, data.shape, georef, labels)]
        line = map_line(tokens)
        with self._lock:
            self._map_lines[index] = line
        return line

    def add_map_line(self, index: int, line: str) -> None:
        """Record the ``map.txt`` line of chip ``index`` written elsewhere (a cluster worker)."""
        with self._lock:
            self._map_lines[index] = line

    def count_chip(
        self,
        labels: ChipLabels | ChipTally | None,
        band_stats: list[BandStats],
        band_stats2: list[BandStats] | None = None,
    ) -> None:
        """Count a chip in the statistics; call in chip order so that sums are reproducible.

        Args:
            labels: The chip's labels, or their :func:`chip_tally` computed where the chip was
                (None: a format without labels).
            band_stats: The chip's per-band statistics.
            band_stats2: Those of its ``images2/`` chip, when paired.
        """
        self.num_chips += 1
        self.band_stats = merge_band_stats(self.band_stats, band_stats)
        if band_stats2 is not None:
            self.band_stats2 = merge_band_stats(self.band_stats2, band_stats2)
        tally = chip_tally(self.fmt.labels, labels) if isinstance(labels, ChipLabels) else labels
        if tally is not None:
            self._add_tally(tally)

    def _write_labels(
        self,
        stem: str,
        image_rel: str,
        shape: tuple[int, ...],
        georef: ChipGeoref,
        labels: ChipLabels,
    ) -> list[str]:
        depth, height, width = shape
        image_name = Path(image_rel).name
        kind = self.fmt.labels
        if kind == "rectangles" and self.fmt.keyword == "KITTI_rectangles":
            rel = f"labels/{stem}.txt"
            (self.folder / rel).write_text(kitti_lines(labels.objects))
        elif kind == "rectangles":
            rel = f"labels/{stem}.xml"
            objects = [(str(o.class_value), o.box) for o in labels.objects]
            (self.folder / rel).write_text(voc_xml(image_name, width, height, depth, objects))
        elif kind == "tile":
            rel = f"labels/{stem}.xml"
            objects = [(str(o.class_value), o.box) for o in labels.objects[:1]]
            (self.folder / rel).write_text(voc_xml(image_name, width, height, depth, objects))
        elif kind == "multitile":
            rel = f"labels/{stem}.xml"
            names = ",".join(str(v) for v in labels.tile_classes)
            objects = [(names, (0.0, 0.0, float(width), float(height)))] if names else []
            (self.folder / rel).write_text(voc_xml(image_name, width, height, depth, objects))
        elif kind == "pixels":
            rel = f"labels/{stem}{self.label_format.extension}"
            raster = labels.class_raster
            dtype = np.uint8 if raster.max(initial=0) < 256 else np.uint16
            colormap = self._colormap() if dtype == np.uint8 else None
            write_chip_image(
                self.folder / rel,
                raster[np.newaxis].astype(dtype),
                self.label_format,
                georef.transform,
                georef.crs,
                None,
                colormap,
            )
        elif kind == "instances":
            rels = []
            for value, ids in sorted(labels.instances.items()):
                name = folder_safe(self.classes[self._class_index[value]].name)
                (self.folder / "labels" / name).mkdir(exist_ok=True)
                rel = f"labels/{name}/{stem}{self.label_format.extension}"
                dtype = np.uint8 if ids.max(initial=0) < 256 else np.uint16
                write_chip_image(
                    self.folder / rel,
                    ids.astype(dtype),
                    self.label_format,
                    georef.transform,
                    georef.crs,
                    None,
                )
                rels.append(rel)
            return rels
        else:
            return []
        return [rel]

    def _colormap(self) -> dict[int, tuple[int, int, int]]:
        cmap = {0: (0, 0, 0)}
        for c in self.classes:
            if c.color is not None and c.value < 256:
                cmap[c.value] = c.color
        return cmap

    def _add_tally(self, tally: ChipTally) -> None:
        """Add a chip's per-class counts to the statistics."""
        self._per_image.add(tally.per_image)
        self.num_features += tally.features
        for value, items, sizes in tally.classes:
            counts = self._tallies[self._class_index[value]]
            counts.images += 1
            counts.items += items
            for size in sizes:
                counts.sizes.add(size)

    def write_map(self) -> None:
        """Write ``map.txt`` in chip order."""
        with open(self.folder / MAP_FILE, "w", newline="\r\n") as f:
            for index in sorted(self._map_lines):
                f.write(self._map_lines[index].rstrip("\n") + "\n")

    def class_stats_json(self) -> tuple[str, dict] | None:
        """The ``FeatureStats`` or ``ClassPixelStats`` entry of the accumulated stats."""
        if self.fmt.labels == "none":
            return None
        common = {
            "NumClasses": len(self.classes),
            "NumImagesTotal": self.num_chips,
            "NumImagesPerClass": [t.images for t in self._tallies],
        }
        if self.fmt.labels == "pixels":
            return "ClassPixelStats", {
                **common,
                "NumPixelsPerClass": [t.items for t in self._tallies],
                "NumClassesPerImage": self._per_image.to_json(),
                "PixelsPerClass": [t.sizes.to_json() for t in self._tallies],
            }
        return "FeatureStats", {
            **common,
            "NumFeaturesTotal": self.num_features,
            "NumFeaturesPerClass": [t.items for t in self._tallies],
            "NumFeaturesPerImage": self._per_image.to_json(),
            "FeatureAreaPerClass": [t.sizes.to_json() for t in self._tallies],
        }

    def stats_text(self, band_count: int, tile_height: int, tile_width: int) -> str:
        """The human-readable ``stats.txt``."""
        lines = [f"images = {self.num_chips} *{band_count}*{tile_height}*{tile_width}"]
        if self.fmt.labels == "none":
            return "\n".join(lines) + "\n"
        pixels = self.fmt.labels == "pixels"
        per = self._per_image
        if not pixels:
            lines.append(f"features = {self.num_features}")
        what = "classes per image" if pixels else "features per image"
        lines.append(
            f"{what} = [min = {per.min if per.count else 0:g}, mean = {per.mean:.2f}, "
            f"max = {per.max if per.count else 0:g}]"
        )
        lines.append(f"classes = {len(self.classes)}")
        unit = "pixels" if pixels else "features"
        lines.append(
            f"{'cls name':<22}{'cls value':>9}{'images':>11}{unit:>11}"
            f"{'min size':>12}{'mean size':>12}{'max size':>12}"
        )
        for c, t in zip(self.classes, self._tallies, strict=True):
            s = t.sizes
            lines.append(
                f"{c.name:<22}{c.value:>9}{t.images:>11}{t.items:>11}"
                f"{s.min if s.count else 0:>12.2f}{s.mean:>12.2f}{s.max if s.count else 0:>12.2f}"
            )
        return "\n".join(lines) + "\n"


def write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=4) + "\n")


def spatial_reference_json(crs: CRS | None) -> dict:
    """An Esri ``spatialReference`` object: the EPSG code where there is one, else the WKT."""
    if crs is None:
        return {}
    epsg = crs.to_epsg()
    return {"wkid": epsg, "latestWkid": epsg} if epsg else {"wkt": crs.to_wkt()}


def accumulated_stats(
    writer: ExportWriter, band_count: int, tile_height: int, tile_width: int
) -> dict:
    """The content of ``esri_accumulated_stats.json``."""
    content: dict = {
        "Version": 1,
        "NumBands": band_count,
        "TileSizeX": tile_width,
        "TileSizeY": tile_height,
        "NumClasses": len(writer.classes),
        "NumTiles": writer.num_chips,
        "NumTilesAsDouble": float(writer.num_chips),
        "OutputFeatures": writer.fmt.output_features,
        "MetaDataMode": writer.fmt.keyword,
        "Classes": [{"ClassValue": c.value, "ClassName": c.name} for c in writer.classes],
    }
    class_stats = writer.class_stats_json()
    if class_stats is not None:
        content[class_stats[0]] = class_stats[1]
    content["BandStatsState"] = [s.to_state() for s in writer.band_stats]
    if writer.paired:
        content["BandStatsState2"] = [s.to_state() for s in writer.band_stats2]
    return content


def training_emd(
    writer: ExportWriter,
    tile_height: int,
    tile_width: int,
    image_space: str,
    band_names: tuple[str, ...],
    cell_size: tuple[float, float] | None,
    crs: CRS | None,
    crop_tile_mode: str,
    blacken_around_feature: bool,
    band_names2: tuple[str, ...] = (),
) -> dict:
    """The training-data ``esri_model_definition.emd`` in its Pro 2.7+ form.

    A paired export (``images2/``) adds ``AllTilesStats2``, the additional raster's band
    statistics, named by ``band_names2``, and counts two input rasters.
    """
    cell = None
    if cell_size is not None:
        cell = {
            "x": cell_size[0],
            "y": cell_size[1],
            "spatialReference": spatial_reference_json(crs),
        }
    return {
        "MetaDataMode": writer.fmt.keyword,
        "ImageHeight": tile_height,
        "ImageWidth": tile_width,
        "ImageSpaceUsed": image_space,
        "Classes": [
            {"Value": c.value, "Name": c.name, "Color": list(c.color) if c.color else [-1, -1, -1]}
            for c in writer.classes
        ],
        "InputRastersProps": {
            "RasterCount": 2 if writer.paired else 1,
            "SensorName": "",
            "BandNames": list(band_names),
        },
        "AllTilesStats": _all_tiles_stats(band_names, writer.band_stats),
        **(
            {"AllTilesStats2": _all_tiles_stats(band_names2, writer.band_stats2)}
            if writer.paired
            else {}
        ),
        "ExtractBands": list(range(len(band_names))),
        "MinCellSize": cell,
        "MaxCellSize": cell,
        "CropTileMode": crop_tile_mode,
        "BlackenAroundFeature": blacken_around_feature,
        "IsMultidimensional": False,
    }


def _all_tiles_stats(band_names: tuple[str, ...], stats: list[BandStats]) -> list[dict]:
    return [
        {"BandName": name, "Min": s.min, "Max": s.max, "Mean": s.m1, "StdDev": s.std}
        for name, s in zip(band_names, stats, strict=False)
    ]
