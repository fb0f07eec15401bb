"""Read any export folder, ours or one written by ArcGIS Pro, into a typed description."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio

from rasterlearn.errors import InputError
from rasterlearn.formats.chips import ACCUMULATED_STATS_FILE, EMD_FILE, SECOND_IMAGES, ClassInfo
from rasterlearn.formats.labels import ObjectLabel, parse_kitti, parse_voc
from rasterlearn.formats.metadata_formats import CHANGE_DETECTION, METADATA_FORMATS
from rasterlearn.geo.stats import BandStats

WORLD_FILE_SUFFIXES = {".jgw", ".pgw", ".tfw", ".wld", ".j2w"}
IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".mrf", ".img"}


@dataclass(frozen=True)
class ChipRecord:
    """One chip and its labels.

    Attributes:
        image: The chip image file.
        label_paths: The label file(s) belonging to it.
        objects: Labelled rectangles in chip pixels (rectangle formats, Labeled_Tiles, RCNN_Masks
            boxes are not stored by ArcGIS and are left empty there).
        tile_classes: Class values of the whole chip (Labeled/MultiLabeled_Tiles, Imagenet).
        class_raster: Class-value raster (Classified_Tiles).
        instance_rasters: Instance-id raster per class value (RCNN_Masks).
        image2: The chip of the additional raster (``images2/``, same name), in paired
            exports (change detection: the "after" image).
    """

    image: Path
    label_paths: tuple[Path, ...] = ()
    objects: tuple[ObjectLabel, ...] = ()
    tile_classes: tuple[int, ...] = ()
    class_raster: Path | None = None
    instance_rasters: dict[int, Path] = field(default_factory=dict)
    image2: Path | None = None


@dataclass(frozen=True)
class ExportFolder:
    """A training-data folder as a typed description.

    Attributes:
        path: The folder.
        metadata_format: Its ``MetaDataMode``.
        classes: The class table (no NoData/background entry).
        band_count: Bands per chip.
        tile_height: Chip height in pixels.
        tile_width: Chip width in pixels.
        image_space: ``MAP_SPACE`` or ``PIXEL_SPACE``.
        band_stats: Per-band statistics (from ``BandStatsState``), empty when not recorded.
        chips: Every chip with its labels, in name order.
        emd: The training-data model definition as read (empty if absent).
        accumulated_stats: ``esri_accumulated_stats.json`` as read (empty if absent).
        dropped_chips: Chips left out because they have no label file.
        dropped_objects: Objects left out because their class is not in the class table.
    """

    path: Path
    metadata_format: str
    classes: tuple[ClassInfo, ...]
    band_count: int
    tile_height: int
    tile_width: int
    image_space: str
    band_stats: tuple[BandStats, ...]
    chips: tuple[ChipRecord, ...]
    emd: dict
    accumulated_stats: dict
    dropped_chips: int = 0
    dropped_objects: int = 0
    band_stats2: tuple[BandStats, ...] = ()

    @property
    def paired(self) -> bool:
        """Chips come in pairs: ``images/`` and ``images2/`` (change detection, Pix2Pix)."""
        return bool(self.chips) and all(c.image2 is not None for c in self.chips)

    @property
    def dataset_type(self) -> str:
        """arcgis.learn's dataset type: the metadata format, or ``ChangeDetection`` for
        ``Classified_Tiles`` pairs."""
        if self.metadata_format == "Classified_Tiles" and self.paired:
            return CHANGE_DETECTION
        return self.metadata_format

    def class_by_value(self) -> dict[int, ClassInfo]:
        return {c.value: c for c in self.classes}

    def chips_per_class(self) -> dict[int, int]:
        """How many chips hold each class value (label rasters are read for pixel formats)."""
        counts: Counter[int] = Counter()
        for chip in self.chips:
            values = {o.class_value for o in chip.objects}
            values |= set(chip.tile_classes) | set(chip.instance_rasters)
            if chip.class_raster is not None:
                values |= raster_values(chip.class_raster)
            counts.update(values)
        return dict(counts)

    def objects_per_class(self) -> dict[int, int]:
        """How many labelled rectangles each class has over all chips."""
        return dict(Counter(o.class_value for chip in self.chips for o in chip.objects))


def raster_values(path: Path) -> set[int]:
    """The non-zero class values in a label raster (all bands)."""
    with rasterio.open(path) as ds:
        values = np.unique(ds.read())
    return {int(v) for v in values if v != 0}


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(
            f"{path} is not valid JSON: {err}", "re-export the training data"
        ) from None
    if not isinstance(content, dict):
        raise InputError(f"{path} does not hold a JSON object", "re-export the training data")
    return content


def _real(value: object) -> object | None:
    """A value of the emd, or None for the Pro 2.5 template placeholders (``"e.g. 256"``)."""
    if isinstance(value, str) and value.strip().lower().startswith("e.g."):
        return None
    return value


def _classes(emd: dict, stats: dict) -> list[ClassInfo]:
    rows = emd.get("Classes") or stats.get("Classes") or []
    classes = []
    for row in rows:
        value = row.get("Value", row.get("ClassValue"))
        name = row.get("Name", row.get("ClassName"))
        if value is None:
            continue
        color = row.get("Color")
        if not color or len(color) < 3 or any(c < 0 for c in color[:3]):
            color = None
        classes.append(
            ClassInfo(
                int(value),
                str(name if name is not None else value),
                tuple(color[:3]) if color else None,
            )
        )
    return classes


def _images(folder: Path) -> list[Path]:
    images = folder / "images"
    return sorted(
        p for p in images.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _infer_format(folder: Path, images: list[Path]) -> str:
    labels = folder / "labels"
    if not labels.is_dir():
        if any(p.parent != folder / "images" for p in images):
            return "Imagenet"
        return "Export_Tiles"
    entries = [p for p in labels.iterdir() if p.is_dir() or not _is_side_car(p)]
    if any(p.is_dir() for p in entries):
        return "RCNN_Masks"
    suffixes = {p.suffix.lower() for p in entries}
    if ".xml" in suffixes:
        return "PASCAL_VOC_rectangles"
    if ".txt" in suffixes:
        return "KITTI_rectangles"
    return "Classified_Tiles"


class _ClassResolver:
    """Maps label text (a class value, or a class name) to a class value."""

    def __init__(self, classes: list[ClassInfo], learn_new: bool) -> None:
        self.classes = classes
        self.by_name = {c.name.lower(): c.value for c in classes}
        self.values = {c.value for c in classes}
        self.learn_new = learn_new
        self.dropped = 0

    def __call__(self, text: str) -> int | None:
        text = text.strip()
        try:
            value = int(float(text))
        except ValueError:
            value = self.by_name.get(text.lower())
            if value is None and self.learn_new:
                value = max(self.values | {0}) + 1
                self._add(value, text)
        else:
            if value not in self.values and self.learn_new:
                self._add(value, str(value))
        if value is None or value not in self.values:
            self.dropped += 1
            return None
        return value

    def _add(self, value: int, name: str) -> None:
        self.classes.append(ClassInfo(value, name))
        self.by_name[name.lower()] = value
        self.values.add(value)


def read_export_folder(folder: str | Path) -> ExportFolder:
    """Read an export folder written by rasterlearn or ArcGIS Pro.

    Accepts numbered chips of any width, VOC ``<name>`` holding a class value or name,
    ``map.txt`` with backslashes, ``ClassValue/ClassName`` or ``Value/Name`` class keys, the
    Pro 2.5 emd template and folders without Esri metadata (format inferred from the labels).

    Raises:
        InputError: if the folder is not a training-data folder.
    """
    folder = Path(folder)
    if not (folder / "images").is_dir():
        raise InputError(
            f"{folder} is not a training-data folder: it has no images/ folder",
            "point at the output folder of export-training-data",
        )
    emd = _read_json(folder / EMD_FILE)
    stats = _read_json(folder / ACCUMULATED_STATS_FILE)
    images = _images(folder)
    if not images:
        raise InputError(f"{folder / 'images'} holds no image chips", "re-export the training data")
    mode = (
        _real(stats.get("MetaDataMode"))
        or _real(emd.get("MetaDataMode"))
        or _infer_format(folder, images)
    )
    known = {k.lower(): k for k in METADATA_FORMATS}
    mode = known.get(str(mode).lower(), str(mode))
    classes = _classes(emd, stats)
    resolver = _ClassResolver(classes, learn_new=not classes)
    chips, dropped = _chips(folder, mode, images, resolver)
    chips, unpaired = _pairs(folder, chips)
    dropped += unpaired
    if not resolver.classes and mode == "Classified_Tiles":
        # Without metadata, the classes are the values found in the label rasters.
        found = set().union(*(raster_values(c.class_raster) for c in chips)) if chips else set()
        resolver.classes.extend(ClassInfo(v, str(v)) for v in sorted(found))
    band_count, height, width = _chip_shape(folder, stats, emd, images[0])
    band_stats = tuple(BandStats.from_state(s) for s in stats.get("BandStatsState") or [])
    band_stats2 = tuple(BandStats.from_state(s) for s in stats.get("BandStatsState2") or [])
    return ExportFolder(
        path=folder,
        metadata_format=mode,
        classes=tuple(sorted(resolver.classes, key=lambda c: c.value)),
        band_count=band_count,
        tile_height=height,
        tile_width=width,
        image_space=str(
            _real(emd.get("ImageSpaceUsed")) or ("MAP_SPACE" if emd else "PIXEL_SPACE")
        ),
        band_stats=band_stats,
        chips=tuple(chips),
        emd=emd,
        accumulated_stats=stats,
        dropped_chips=dropped,
        dropped_objects=resolver.dropped,
        band_stats2=band_stats2,
    )


def _pairs(folder: Path, chips: list[ChipRecord]) -> tuple[list[ChipRecord], int]:
    """With an ``images2/`` folder, each chip with its second image (same name); chips
    without one are dropped."""
    second = folder / SECOND_IMAGES
    if not second.is_dir():
        return chips, 0
    by_name = {
        p.relative_to(second): p
        for p in second.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }
    paired = [
        replace(c, image2=by_name[c.image.relative_to(folder / "images")])
        for c in chips
        if c.image.relative_to(folder / "images") in by_name
    ]
    return paired, len(chips) - len(paired)


def _chip_shape(folder: Path, stats: dict, emd: dict, first: Path) -> tuple[int, int, int]:
    def _int(*values: object) -> int | None:
        for v in values:
            v = _real(v)
            if v is not None:
                try:
                    return int(v)
                except (TypeError, ValueError):
                    continue
        return None

    bands = _int(stats.get("NumBands"), len(emd.get("AllTilesStats") or []) or None)
    height = _int(stats.get("TileSizeY"), emd.get("ImageHeight"))
    width = _int(stats.get("TileSizeX"), emd.get("ImageWidth"))
    if None in (bands, height, width):
        try:
            with rasterio.open(first) as ds:
                bands = bands or ds.count
                height = height or ds.height
                width = width or ds.width
        except rasterio.errors.RasterioIOError as err:
            raise InputError(
                f"cannot read chip {first}: {err}", "re-export the training data"
            ) from None
    return bands, height, width


def _is_side_car(path: Path) -> bool:
    """GDAL/Esri side-car files (.aux.xml, .ovr, world files) that sit beside chips and labels."""
    name = path.name.lower()
    return name.endswith((".aux.xml", ".ovr")) or path.suffix.lower() in WORLD_FILE_SUFFIXES


def _label_index(labels: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    if labels.is_dir():
        for p in labels.iterdir():
            if p.is_file() and not _is_side_car(p):
                index.setdefault(p.stem, []).append(p)
    return index


def _chips(
    folder: Path, mode: str, images: list[Path], resolve: _ClassResolver
) -> tuple[list[ChipRecord], int]:
    labels_dir = folder / "labels"
    chips: list[ChipRecord] = []
    dropped = 0
    if mode in ("Export_Tiles", "CycleGAN"):
        return [ChipRecord(p) for p in images], 0
    if mode == "Imagenet":
        for p in images:
            value = resolve(p.parent.name) if p.parent != folder / "images" else None
            if value is None:
                dropped += 1
                continue
            chips.append(ChipRecord(p, tile_classes=(value,)))
        return chips, dropped
    if mode == "RCNN_Masks":
        class_dirs = (
            sorted(d for d in labels_dir.iterdir() if d.is_dir()) if labels_dir.is_dir() else []
        )
        per_class = {}
        for d in class_dirs:
            value = resolve(d.name)
            if value is not None:
                per_class[value] = {
                    p.stem: p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                }
        for p in images:
            masks = {v: files[p.stem] for v, files in per_class.items() if p.stem in files}
            if not masks:
                dropped += 1
                continue
            chips.append(ChipRecord(p, tuple(masks.values()), instance_rasters=masks))
        return chips, dropped
    index = _label_index(labels_dir)
    for p in images:
        candidates = index.get(p.stem, [])
        if not candidates:
            dropped += 1
            continue
        label = _pick_label(candidates, mode)
        chips.append(_chip_from_label(p, label, mode, resolve))
    return chips, dropped


def _pick_label(candidates: list[Path], mode: str) -> Path:
    wanted = {"KITTI_rectangles": (".txt",), "Classified_Tiles": tuple(IMAGE_SUFFIXES)}.get(
        mode, (".xml",)
    )
    for c in candidates:
        if c.suffix.lower() in wanted:
            return c
    return candidates[0]


def _chip_from_label(image: Path, label: Path, mode: str, resolve: _ClassResolver) -> ChipRecord:
    if mode == "Classified_Tiles":
        return ChipRecord(image, (label,), class_raster=label)
    if mode == "KITTI_rectangles":
        objects = []
        for text, box in parse_kitti(label):
            value = resolve(text)
            if value is not None:
                objects.append(ObjectLabel(value, *box))
        return ChipRecord(image, (label,), objects=tuple(objects))
    annotation = parse_voc(label)
    if mode == "MultiLabeled_Tiles":
        values: list[int] = []
        if annotation.objects:
            for text in annotation.objects[0].name.split(","):
                value = resolve(text) if text.strip() else None
                if value is not None:
                    values.append(value)
        return ChipRecord(image, (label,), tile_classes=tuple(values))
    objects = []
    for obj in annotation.objects:
        value = resolve(obj.name)
        if value is not None and obj.box is not None:
            objects.append(ObjectLabel(value, *obj.box))
    tile = (objects[0].class_value,) if mode == "Labeled_Tiles" and objects else ()
    return ChipRecord(image, (label,), objects=tuple(objects), tile_classes=tile)
