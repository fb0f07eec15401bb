"""read_export_folder: our own exports read back, and export folders laid out as ArcGIS Pro does.

The ArcGIS folders here are built by hand, file by file, from reference
/work/shared/reference/arcgis-formats.md §1 (1.2 layout, 1.3 map.txt, 1.5 accumulated stats,
1.6 training emd, 1.7 label contents), never with rasterlearn's own writers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from rasterlearn.errors import InputError
from rasterlearn.formats.chips import ClassInfo
from rasterlearn.formats.export_reader import read_export_folder
from rasterlearn.tools.export_training_data import export_training_data

TILE_W, TILE_H = 64, 48  # not square, so that a swapped width/height shows
PIXEL = 0.5
ORIGIN = (400000.0, 3300000.0)

# Pro 2.5 training-data emd template (reference §1.6): placeholder values and no-colour classes.
WELL_KNOWN_BANDS = [
    "Red",
    "Green",
    "Blue",
    "Infrared",
    "CoastalBlue",
    "Yellow",
    "RedEdge",
    "ShortWaveInfrared",
    "NearInfrared",
    "NearInfrared_1",
    "NearInfrared_2",
    "MidInfrared",
    "MidInfrared_1",
    "MidInfrared_2",
    "Thermal",
    "Thermal_1",
    "Thermal_2",
    "Panchromatic",
    "PseudoRed",
    "PseudoGreen",
    "PseudoBlue",
]


def pro25_emd_template(classes: list[tuple[int, str]]) -> dict:
    return {
        "Framework": "e.g. CNTK",
        "ModelConfiguration": "e.g. FasterRCNN",
        "ModelType": "e.g. ObjectDetection",
        "ModelFile": "e.g. .\\CNTK\\model.model",
        "ImageHeight": "e.g. 256",
        "ImageWidth": "e.g. 256",
        "ExtractBands": "e.g. [0,1,2]",
        "DataRange": "e.g. [0,255]",
        "ModelPadding": "e.g. 0",
        "BatchSize": "e.g. 1",
        "PerProcessGPUMemoryFraction": "e.g. 0.9",
        "WellKnownBandNames (FYI, these band names can be used in ExtractBands)": WELL_KNOWN_BANDS,
        "Classes": [{"Value": v, "Name": n, "Color": [-1, -1, -1]} for v, n in classes],
    }


def pro2_accumulated_stats(
    mode: str, classes: list[tuple[int, str]], num_tiles: int, bands: int = 3
) -> dict:
    """esri_accumulated_stats.json in its old Pro 2.x form (reference §1.5): ClassValue/ClassName
    keys, FeatureStats or ClassPixelStats, no NumTilesAsDouble and no BandStatsState."""
    stats = {
        "Version": 1,
        "NumBands": bands,
        "TileSizeX": TILE_W,
        "TileSizeY": TILE_H,
        "NumClasses": len(classes),
        "NumTiles": num_tiles,
        "OutputFeatures": mode != "Classified_Tiles",
        "MetaDataMode": mode,
        "Classes": [{"ClassValue": v, "ClassName": n} for v, n in classes],
    }
    summary = {"Min": 1, "Max": 2, "Mean": 1.5, "Sum": 3, "Count": 2}
    if mode == "Classified_Tiles":
        stats["ClassPixelStats"] = {
            "NumClasses": len(classes),
            "NumImagesTotal": num_tiles,
            "NumImagesPerClass": [1] * len(classes),
            "NumPixelsPerClass": [100] * len(classes),
            "NumClassesPerImage": summary,
            "PixelsPerClass": [summary] * len(classes),
        }
    else:
        stats["FeatureStats"] = {
            "NumClasses": len(classes),
            "NumImagesTotal": num_tiles,
            "NumFeaturesTotal": 3,
            "NumImagesPerClass": [1] * len(classes),
            "NumFeaturesPerClass": [1] * len(classes),
            "NumFeaturesPerImage": summary,
            "FeatureAreaPerClass": [summary] * len(classes),
        }
    return stats


def write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2), encoding="utf-8")


def chip_transform(index: int) -> Affine:
    return Affine(PIXEL, 0, ORIGIN[0] + index * TILE_W * PIXEL, 0, -PIXEL, ORIGIN[1])


def write_chip(path: Path, index: int, bands: int = 3, dtype: str = "uint8") -> None:
    """A chip image: GeoTIFF, or JPEG/PNG with a world file, an .ovr and an .aux.xml like Pro."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(index)
    data = rng.integers(0, 255, (bands, TILE_H, TILE_W)).astype(dtype)
    suffix = path.suffix.lower()
    driver = {".jpg": "JPEG", ".png": "PNG", ".tif": "GTiff"}[suffix]
    profile = {
        "driver": driver,
        "width": TILE_W,
        "height": TILE_H,
        "count": bands,
        "dtype": dtype,
    }
    if driver == "GTiff":
        profile.update(crs="EPSG:32617", transform=chip_transform(index))
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    if driver != "GTiff":
        t = chip_transform(index)
        x, y = t @ (0.5, 0.5)  # world files refer to the centre of the upper-left pixel
        lines = [t.a, t.d, t.b, t.e, x, y]
        world = path.with_suffix({".jpg": ".jgw", ".png": ".pgw"}[suffix])
        world.write_text("".join(f"{v:.12f}\r\n" for v in lines))
        path.with_name(path.name + ".ovr").write_bytes(b"\x00" * 16)
        path.with_name(path.name + ".aux.xml").write_text("<PAMDataset />\n")


def write_label_raster(path: Path, values: np.ndarray) -> None:
    """A single-band label raster (class values or instance ids) with a PAM side-car."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": values.shape[-1],
        "height": values.shape[-2],
        "count": 1,
        "dtype": "uint8",
    }
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype("uint8"), 1)
    path.with_name(path.name + ".aux.xml").write_text(
        "<PAMDataset>\n  <Metadata />\n</PAMDataset>\n"
    )


def arcgis_voc(filename: str, objects: list[tuple[str, tuple[str, str, str, str]]]) -> str:
    """A label file exactly as ArcGIS Pro writes PASCAL VOC (reference §1.7)."""
    lines = [
        '<?xml version="1.0"?>',
        "<annotation>",
        f"    <filename>{filename}</filename>",
        "    <source>",
        "        <annotation>ArcGIS Pro 2.1</annotation>",
        "    </source>",
        "    <size>",
        f"        <width>{TILE_W}</width>",
        f"        <height>{TILE_H}</height>",
        "        <depth>3</depth>",
        "    </size>",
    ]
    for name, (xmin, ymin, xmax, ymax) in objects:
        lines += [
            "    <object>",
            f"        <name>{name}</name>",
            "        <bndbox>",
            f"            <xmin>{xmin}</xmin>",
            f"            <ymin>{ymin}</ymin>",
            f"            <xmax>{xmax}</xmax>",
            f"            <ymax>{ymax}</ymax>",
            "        </bndbox>",
            "    </object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def write_map(folder: Path, rows: list[list[str]]) -> None:
    """map.txt as Pro writes it (reference §1.3): backslashes, two spaces, trailing space, CRLF."""
    text = "".join("  ".join(r.replace("/", "\\") for r in row) + " \r\n" for row in rows)
    (folder / "map.txt").write_bytes(text.encode("ascii"))


PALM_BANANA = [(1, "Palm"), (2, "Banana")]

# Objects per chip as ArcGIS writes them: <name> holds the class value, boxes have two decimals.
VOC_OBJECTS = [
    [("1", ("12.50", "3.25", "30.00", "20.75")), ("2", ("40.95", "31.68", "64.00", "48.00"))],
    [("1", ("0.00", "0.00", "8.40", "9.60"))],
    [("2", ("20.00", "10.00", "44.00", "36.00"))],
]


def build_pro2_voc_export(
    folder: Path,
    stems: list[str] | None = None,
    map_order: list[int] | None = None,
    objects: list[list] = VOC_OBJECTS,
) -> list[str]:
    """A PASCAL_VOC_rectangles JPEG export exactly as ArcGIS Pro 2.x writes it.

    Built by hand from reference §1: 9-digit JPEG chips with .jgw world files (and .jpg.ovr),
    VOC xml whose <name> is the class value and whose <source><annotation> is 'ArcGIS Pro 2.1',
    map.txt with backslashes/two spaces/trailing space/CRLF, esri_accumulated_stats.json in the
    old Pro 2.x form and the Pro 2.5 emd template.
    """
    stems = stems or [f"{i:09d}" for i in range(len(objects))]
    (folder / "labels").mkdir(parents=True)
    for i, (stem, objs) in enumerate(zip(stems, objects, strict=True)):
        write_chip(folder / "images" / f"{stem}.jpg", i)
        (folder / "labels" / f"{stem}.xml").write_text(arcgis_voc(f"{stem}.jpg", objs))
    order = map_order or list(range(len(stems)))
    write_map(folder, [[f"images/{stems[i]}.jpg", f"labels/{stems[i]}.xml"] for i in order])
    (folder / "stats.txt").write_text(f"images = {len(stems)} *3*{TILE_H}*{TILE_W}\n")
    write_json(
        folder / "esri_accumulated_stats.json",
        pro2_accumulated_stats("PASCAL_VOC_rectangles", PALM_BANANA, len(stems)),
    )
    write_json(folder / "esri_model_definition.emd", pro25_emd_template(PALM_BANANA))
    return stems


def boxes(chip) -> list[tuple[int, tuple[float, float, float, float]]]:
    return [(o.class_value, o.box) for o in chip.objects]


EXPECTED_VOC_BOXES = [
    [(1, (12.5, 3.25, 30.0, 20.75)), (2, (40.95, 31.68, 64.0, 48.0))],
    [(1, (0.0, 0.0, 8.4, 9.6))],
    [(2, (20.0, 10.0, 44.0, 36.0))],
]


# --- ArcGIS Pro folders -------------------------------------------------------------------


def test_pro2_pascal_voc_jpeg_export(tmp_path):
    folder = tmp_path / "pro_voc"
    stems = build_pro2_voc_export(folder)

    export = read_export_folder(folder)

    assert export.path == folder
    assert export.metadata_format == "PASCAL_VOC_rectangles"
    # Classes from the template's Value/Name; [-1,-1,-1] means "no colour".
    assert export.classes == (ClassInfo(1, "Palm", None), ClassInfo(2, "Banana", None))
    assert export.class_by_value()[2].name == "Banana"
    # "e.g. 256" placeholders are not sizes: the stats' TileSizeX/Y are.
    assert (export.band_count, export.tile_height, export.tile_width) == (3, TILE_H, TILE_W)
    assert export.image_space == "MAP_SPACE"  # reference §1.6: the assumed default
    assert export.band_stats == ()  # Pro 2.x wrote no BandStatsState
    assert export.accumulated_stats["MetaDataMode"] == "PASCAL_VOC_rectangles"
    assert export.emd["ImageHeight"] == "e.g. 256"
    # World files, .ovr and .aux.xml are no chips; each chip is paired with its label by stem.
    assert [c.image for c in export.chips] == [folder / "images" / f"{s}.jpg" for s in stems]
    assert [c.label_paths for c in export.chips] == [
        (folder / "labels" / f"{s}.xml",) for s in stems
    ]
    assert [boxes(c) for c in export.chips] == EXPECTED_VOC_BOXES
    assert all(c.tile_classes == () and c.class_raster is None for c in export.chips)
    assert (export.dropped_chips, export.dropped_objects) == (0, 0)


@pytest.mark.parametrize("keep", ["emd template only", "stats only", "no Esri metadata"])
def test_pro2_voc_export_with_metadata_files_missing(tmp_path, keep):
    folder = tmp_path / "pro_voc"
    build_pro2_voc_export(folder)
    if keep != "emd template only":
        (folder / "esri_model_definition.emd").unlink()
    if keep != "stats only":
        (folder / "esri_accumulated_stats.json").unlink()

    export = read_export_folder(folder)

    # The emd template has no MetaDataMode: the format comes from the labels.
    assert export.metadata_format == "PASCAL_VOC_rectangles"
    expected = {
        "emd template only": (ClassInfo(1, "Palm", None), ClassInfo(2, "Banana", None)),
        "stats only": (ClassInfo(1, "Palm", None), ClassInfo(2, "Banana", None)),
        "no Esri metadata": (ClassInfo(1, "1", None), ClassInfo(2, "2", None)),
    }[keep]
    assert export.classes == expected
    # Without stats the size comes from the chips, not from the "e.g. 256" placeholders.
    assert (export.band_count, export.tile_height, export.tile_width) == (3, TILE_H, TILE_W)
    assert [boxes(c) for c in export.chips] == EXPECTED_VOC_BOXES
    assert (export.dropped_chips, export.dropped_objects) == (0, 0)


def test_twelve_digit_chip_names_and_unsorted_map(tmp_path):
    folder = tmp_path / "pro_voc12"
    stems = ["000000020024", "000000020025", "000000020031"]
    build_pro2_voc_export(folder, stems=stems, map_order=[2, 0, 1])
    first_line = (folder / "map.txt").read_bytes().split(b"\n")[0]
    assert first_line == b"images\\000000020031.jpg  labels\\000000020031.xml \r"

    export = read_export_folder(folder)

    assert [c.image.name for c in export.chips] == [f"{s}.jpg" for s in stems]
    assert [c.label_paths[0].name for c in export.chips] == [f"{s}.xml" for s in stems]
    assert [boxes(c) for c in export.chips] == EXPECTED_VOC_BOXES


def test_chip_without_label_and_object_of_unknown_class_are_dropped(tmp_path):
    folder = tmp_path / "pro_voc"
    objects = [
        [("1", ("1.00", "2.00", "3.00", "4.00")), ("7", ("5.00", "6.00", "7.00", "8.00"))],
        [("2", ("0.00", "0.00", "8.00", "8.00"))],
        [("7", ("9.00", "9.00", "19.00", "19.00")), ("2", ("2.00", "2.00", "6.00", "6.00"))],
    ]
    build_pro2_voc_export(folder, objects=objects)
    (folder / "labels" / "000000001.xml").unlink()

    export = read_export_folder(folder)

    assert [c.image.name for c in export.chips] == ["000000000.jpg", "000000002.jpg"]
    assert [boxes(c) for c in export.chips] == [
        [(1, (1.0, 2.0, 3.0, 4.0))],
        [(2, (2.0, 2.0, 6.0, 6.0))],
    ]
    assert export.dropped_chips == 1
    assert export.dropped_objects == 2
    assert [c.value for c in export.classes] == [1, 2]  # class 7 is not added to the table


def test_voc_with_class_names_and_no_esri_metadata(tmp_path):
    """A VOC folder from elsewhere: no Esri files, <name> holds class names (e.g. "Palm")."""
    folder = tmp_path / "voc_names"
    objects = [
        [("Palm", ("1.00", "1.00", "10.00", "10.00"))],
        [
            ("Banana", ("2.00", "2.00", "12.00", "12.00")),
            ("Palm", ("3.00", "3.00", "9.00", "9.00")),
        ],
        [("banana", ("4.00", "4.00", "14.00", "14.00"))],
    ]
    (folder / "labels").mkdir(parents=True)
    for i, objs in enumerate(objects):
        write_chip(folder / "images" / f"{i:09d}.png", i)
        (folder / "labels" / f"{i:09d}.xml").write_text(arcgis_voc(f"{i:09d}.png", objs))

    export = read_export_folder(folder)

    assert export.metadata_format == "PASCAL_VOC_rectangles"
    assert export.classes == (ClassInfo(1, "Palm", None), ClassInfo(2, "Banana", None))
    assert [[o.class_value for o in c.objects] for c in export.chips] == [[1], [2, 1], [2]]
    assert (export.band_count, export.tile_height, export.tile_width) == (3, TILE_H, TILE_W)
    assert (export.dropped_chips, export.dropped_objects) == (0, 0)


def build_classified_tiles(folder: Path, esri_metadata: bool = True) -> list[np.ndarray]:
    """Classified_Tiles, TIFF chips with tif class rasters and .tif.aux.xml side-cars (§1.7).

    Built by hand from reference §1.
    """
    rasters = []
    rows = []
    for i in range(3):
        stem = f"{i:09d}"
        write_chip(folder / "images" / f"{stem}.tif", i)
        values = np.zeros((TILE_H, TILE_W), dtype=np.uint8)
        values[: 10 + i, : 20 + i] = 1
        values[30:, 40:] = 3 if i != 1 else 0
        write_label_raster(folder / "labels" / f"{stem}.tif", values)
        rasters.append(values)
        rows.append([f"images/{stem}.tif", f"labels/{stem}.tif"])
    write_map(folder, rows)
    if esri_metadata:
        classes = [(1, "Building"), (3, "Water")]
        write_json(
            folder / "esri_accumulated_stats.json",
            pro2_accumulated_stats("Classified_Tiles", classes, 3),
        )
        emd = pro25_emd_template(classes)
        emd["Classes"][1]["Color"] = [0, 112, 255]
        write_json(folder / "esri_model_definition.emd", emd)
    return rasters


def test_classified_tiles_with_tif_labels(tmp_path):
    folder = tmp_path / "pro_classified"
    rasters = build_classified_tiles(folder)

    export = read_export_folder(folder)

    assert export.metadata_format == "Classified_Tiles"
    assert export.classes == (ClassInfo(1, "Building", None), ClassInfo(3, "Water", (0, 112, 255)))
    assert (export.band_count, export.tile_height, export.tile_width) == (3, TILE_H, TILE_W)
    assert [c.image.name for c in export.chips] == [f"{i:09d}.tif" for i in range(3)]
    assert [c.class_raster for c in export.chips] == [
        folder / "labels" / f"{i:09d}.tif" for i in range(3)
    ]
    for chip, expected in zip(export.chips, rasters, strict=True):
        assert chip.label_paths == (chip.class_raster,)
        with rasterio.open(chip.class_raster) as ds:
            np.testing.assert_array_equal(ds.read(1), expected)
        assert chip.objects == () and chip.instance_rasters == {}
    assert (export.dropped_chips, export.dropped_objects) == (0, 0)


def test_classified_tiles_without_esri_metadata_is_inferred_despite_aux_xml(tmp_path):
    """Label rasters come with .tif.aux.xml side-cars (§1.2: readers must ignore them)."""
    folder = tmp_path / "classified_no_meta"
    build_classified_tiles(folder, esri_metadata=False)

    export = read_export_folder(folder)

    assert export.metadata_format == "Classified_Tiles"
    assert [c.class_raster.name for c in export.chips] == [f"{i:09d}.tif" for i in range(3)]


def test_kitti_folder(tmp_path):
    """KITTI_rectangles built by hand from reference §1.7: 15 columns, value + box filled."""
    folder = tmp_path / "pro_kitti"
    (folder / "labels").mkdir(parents=True)
    lines = [
        ["1 0.00 0 0.00 12.50 3.25 30.00 20.75 0.00 0.00 0.00 0.00 0.00 0.00 0.00",
         "2 0.00 0 0.00 40.95 31.68 64.00 48.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00"],
        ["1 0.00 0 0.00 0.00 0.00 8.40 9.60 0.00 0.00 0.00 0.00 0.00 0.00 0.00"],
        ["2 0.00 0 0.00 20.00 10.00 44.00 36.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00"],
    ]  # fmt: skip
    rows = []
    for i, chip_lines in enumerate(lines):
        stem = f"{i:09d}"
        write_chip(folder / "images" / f"{stem}.tif", i)
        (folder / "labels" / f"{stem}.txt").write_bytes(
            "".join(line + "\r\n" for line in chip_lines).encode()
        )
        rows.append([f"images/{stem}.tif", f"labels/{stem}.txt"])
    write_map(folder, rows)
    write_json(
        folder / "esri_accumulated_stats.json",
        pro2_accumulated_stats("KITTI_rectangles", PALM_BANANA, 3),
    )
    write_json(folder / "esri_model_definition.emd", pro25_emd_template(PALM_BANANA))

    export = read_export_folder(folder)

    assert export.metadata_format == "KITTI_rectangles"
    assert export.classes == (ClassInfo(1, "Palm", None), ClassInfo(2, "Banana", None))
    assert [boxes(c) for c in export.chips] == EXPECTED_VOC_BOXES
    assert [c.label_paths for c in export.chips] == [
        (folder / "labels" / f"{i:09d}.txt",) for i in range(3)
    ]


def test_rcnn_masks_folder_with_class_name_subfolders(tmp_path):
    """RCNN_Masks built by hand from reference §1.7: labels/<ClassName>/<chip>.tif ids."""
    folder = tmp_path / "pro_rcnn"
    classes = [(1, "Palm"), (2, "Banana")]
    masks = {  # chip index -> class names with a mask; chip 2 has none (skipped, §1.7)
        0: ["Palm", "Banana"],
        1: ["Banana"],
        2: [],
        3: ["Palm"],
    }
    rows = []
    for i, names in masks.items():
        stem = f"{i:09d}"
        write_chip(folder / "images" / f"{stem}.tif", i)
        row = [f"images/{stem}.tif"]
        for name in names:
            ids = np.zeros((TILE_H, TILE_W), dtype=np.uint8)
            ids[2:10, 2:10] = 1
            ids[20:30, 20:40] = 2
            write_label_raster(folder / "labels" / name / f"{stem}.tif", ids)
            row.append(f"labels/{name}/{stem}.tif")
        rows.append(row)
    write_map(folder, rows)
    write_json(
        folder / "esri_accumulated_stats.json",
        pro2_accumulated_stats("RCNN_Masks", classes, 4),
    )
    write_json(folder / "esri_model_definition.emd", pro25_emd_template(classes))

    export = read_export_folder(folder)

    assert export.metadata_format == "RCNN_Masks"
    assert export.classes == (ClassInfo(1, "Palm", None), ClassInfo(2, "Banana", None))
    assert [c.image.stem for c in export.chips] == ["000000000", "000000001", "000000003"]
    labels = folder / "labels"
    assert [c.instance_rasters for c in export.chips] == [
        {1: labels / "Palm" / "000000000.tif", 2: labels / "Banana" / "000000000.tif"},
        {2: labels / "Banana" / "000000001.tif"},
        {1: labels / "Palm" / "000000003.tif"},
    ]
    assert [sorted(c.label_paths) for c in export.chips] == [
        sorted(c.instance_rasters.values()) for c in export.chips
    ]
    assert export.dropped_chips == 1
    assert export.dropped_objects == 0


@pytest.mark.parametrize("esri_metadata", [True, False], ids=["with-metadata", "no-metadata"])
def test_imagenet_folder(tmp_path, esri_metadata):
    """Imagenet built by hand from reference §1.7: images/<class>/<chip>, no labels folder."""
    folder = tmp_path / "pro_imagenet"
    chip_classes = [1, 2, 1, 2, 2]
    rows = []
    for i, value in enumerate(chip_classes):
        write_chip(folder / "images" / str(value) / f"{i:09d}.jpg", i)
        rows.append([f"images/{value}/{i:09d}.jpg"])
    write_map(folder, rows)
    if esri_metadata:
        write_json(
            folder / "esri_accumulated_stats.json",
            pro2_accumulated_stats("Imagenet", PALM_BANANA, len(chip_classes)),
        )
        write_json(folder / "esri_model_definition.emd", pro25_emd_template(PALM_BANANA))

    export = read_export_folder(folder)

    assert export.metadata_format == "Imagenet"
    names = ["Palm", "Banana"] if esri_metadata else ["1", "2"]
    assert export.classes == (ClassInfo(1, names[0], None), ClassInfo(2, names[1], None))
    by_name = {c.image.name: c.tile_classes for c in export.chips}
    assert by_name == {f"{i:09d}.jpg": (v,) for i, v in enumerate(chip_classes)}
    assert all(c.objects == () and c.label_paths == () for c in export.chips)
    assert (export.band_count, export.tile_height, export.tile_width) == (3, TILE_H, TILE_W)
    assert (export.dropped_chips, export.dropped_objects) == (0, 0)


# --- bad folders ----------------------------------------------------------------------------


def test_folder_without_images_is_refused(tmp_path):
    folder = tmp_path / "not_an_export"
    (folder / "labels").mkdir(parents=True)
    with pytest.raises(InputError, match="images") as err:
        read_export_folder(folder)
    assert str(folder) in str(err.value)


def test_invalid_accumulated_stats_json_is_refused(tmp_path):
    folder = tmp_path / "pro_voc"
    build_pro2_voc_export(folder)
    stats = folder / "esri_accumulated_stats.json"
    stats.write_text('{"MetaDataMode": "PASCAL_VOC_rectangles", "NumBands": 3,')
    with pytest.raises(InputError) as err:
        read_export_folder(folder)
    assert "esri_accumulated_stats.json" in str(err.value)


# --- round trip: our exports read back ----------------------------------------------------


ROUND_TRIP_FORMATS = [
    "PASCAL_VOC_rectangles",
    "KITTI_rectangles",
    "Classified_Tiles",
    "RCNN_Masks",
    "Labeled_Tiles",
    "MultiLabeled_Tiles",
    "Imagenet",
    "Export_Tiles",
]


@pytest.mark.parametrize("fmt", ROUND_TRIP_FORMATS)
def test_round_trip_of_our_exports(tmp_path, scene, fmt):
    result = export_training_data(
        scene.raster_path,
        tmp_path / fmt,
        None if fmt == "Export_Tiles" else scene.polygons_path,
        metadata_format=fmt,
        image_chip_format="JPEG" if fmt in ("KITTI_rectangles", "Imagenet") else "TIFF",
        tile_size_x=160,
        tile_size_y=128,
        stride_x=160,
        stride_y=128,
    )

    export = read_export_folder(result.out_folder)

    assert export.metadata_format == fmt
    assert list(export.classes) == result.classes
    if fmt != "Export_Tiles":
        assert [c.value for c in export.classes] == [1, 2, 3]
        assert all(c.color is not None for c in export.classes)
    assert len(export.chips) == result.num_chips > 0
    assert (export.band_count, export.tile_height, export.tile_width) == (3, 128, 160)
    assert export.image_space == "MAP_SPACE"
    assert len(export.band_stats) == 3
    assert (export.dropped_chips, export.dropped_objects) == (0, 0)
    for chip in export.chips:
        assert chip.image.is_file()
        assert all(p.is_file() for p in chip.label_paths)
    if fmt in ("PASCAL_VOC_rectangles", "KITTI_rectangles", "Labeled_Tiles"):
        assert sum(len(c.objects) for c in export.chips) == result.num_features
        for chip in export.chips:
            for o in chip.objects:
                assert 0 <= o.xmin < o.xmax <= 160 and 0 <= o.ymin < o.ymax <= 128
    if fmt == "Classified_Tiles":
        for chip in export.chips:
            with rasterio.open(chip.class_raster) as ds, rasterio.open(chip.image) as img:
                assert (ds.count, ds.height, ds.width) == (1, 128, 160)
                assert ds.transform == img.transform
                assert set(np.unique(ds.read(1)).tolist()) <= {0, 1, 2, 3}
    if fmt == "RCNN_Masks":
        assert all(c.instance_rasters for c in export.chips)
        assert sum(len(c.instance_rasters) for c in export.chips) >= result.num_chips
    if fmt in ("Labeled_Tiles", "Imagenet"):
        assert all(len(c.tile_classes) == 1 for c in export.chips)
        assert result.num_chips == result.num_features
    if fmt == "MultiLabeled_Tiles":
        assert sum(len(c.tile_classes) for c in export.chips) == result.num_features


def test_round_trip_pixel_space(tmp_path, scene):
    result = export_training_data(
        scene.raster_path,
        tmp_path / "voc",
        scene.polygons_path,
        tile_size_x=256,
        tile_size_y=256,
        stride_x=256,
        stride_y=256,
        reference_system="PIXEL_SPACE",
    )
    export = read_export_folder(result.out_folder)
    assert export.image_space == "PIXEL_SPACE"
    assert export.emd["ImageSpaceUsed"] == "PIXEL_SPACE"
