"""Label files, one writer/reader pair per ArcGIS metadata format (reference §1.7).

Coordinates are chip pixels: x to the right, y down, origin at the chip's upper-left corner.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VOC_SOURCE = "ArcGIS Pro 2.1"  # the literal ArcGIS writes into <source><annotation>


@dataclass(frozen=True)
class ObjectLabel:
    """One labelled object in a chip: its class value and bounding rectangle in chip pixels."""

    class_value: int
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    area: float = field(default=0.0, compare=False)  # map units, for export statistics

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.xmin, self.ymin, self.xmax, self.ymax)


@dataclass
class ChipLabels:
    """Everything a chip is labelled with; which parts are set depends on the metadata format.

    Attributes:
        objects: Objects with rectangles (rectangle formats, Labeled_Tiles, RCNN_Masks).
        class_raster: ``(rows, cols)`` class values, 0 = NoData (Classified_Tiles).
        instances: Per class value, ``(bands, rows, cols)`` instance ids (RCNN_Masks).
        tile_classes: Class values of the whole chip (Labeled/MultiLabeled_Tiles, Imagenet).
    """

    objects: list[ObjectLabel] = field(default_factory=list)
    class_raster: np.ndarray | None = None
    instances: dict[int, np.ndarray] = field(default_factory=dict)
    tile_classes: list[int] = field(default_factory=list)


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def voc_xml(
    filename: str, width: int, height: int, depth: int, objects: list[tuple[str, tuple]]
) -> str:
    """A PASCAL VOC annotation exactly in ArcGIS's shape (4-space indent, values as text)."""
    lines = [
        '<?xml version="1.0"?>',
        "<annotation>",
        f"    <filename>{filename}</filename>",
        "    <source>",
        f"        <annotation>{VOC_SOURCE}</annotation>",
        "    </source>",
        "    <size>",
        f"        <width>{width}</width>",
        f"        <height>{height}</height>",
        f"        <depth>{depth}</depth>",
        "    </size>",
    ]
    for name, box in objects:
        lines += [
            "    <object>",
            f"        <name>{name}</name>",
            "        <bndbox>",
            f"            <xmin>{_fmt(box[0])}</xmin>",
            f"            <ymin>{_fmt(box[1])}</ymin>",
            f"            <xmax>{_fmt(box[2])}</xmax>",
            f"            <ymax>{_fmt(box[3])}</ymax>",
            "        </bndbox>",
            "    </object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class VocObject:
    """An ``<object>`` of a VOC-like file: its ``<name>`` text and rectangle."""

    name: str
    box: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class VocAnnotation:
    filename: str | None
    width: int | None
    height: int | None
    depth: int | None
    objects: list[VocObject]


def parse_voc(path: Path) -> VocAnnotation:
    """Read a VOC-like XML file (ArcGIS's or canonical VOC)."""
    root = ET.parse(path).getroot()

    def _int(tag: str) -> int | None:
        node = root.find(f"size/{tag}")
        return int(float(node.text)) if node is not None and node.text else None

    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        box = None
        if bnd is not None:
            box = tuple(float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(VocObject(name, box))
    return VocAnnotation(
        root.findtext("filename"), _int("width"), _int("height"), _int("depth"), objects
    )


def kitti_lines(objects: list[ObjectLabel]) -> str:
    """KITTI label text: 15 columns, class value and the rectangle filled, the rest zeros."""
    rows = []
    for o in objects:
        box = " ".join(_fmt(v) for v in o.box)
        rows.append(f"{o.class_value} 0.00 0 0.00 {box} 0.00 0.00 0.00 0.00 0.00 0.00 0.00")
    return "".join(row + "\n" for row in rows)


def parse_kitti(path: Path) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Read KITTI label lines as (class text, rectangle)."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        out.append((parts[0], tuple(float(v) for v in parts[4:8])))
    return out
