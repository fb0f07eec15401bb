"""The main job on bundled data; it grows with the workflow (today: export training data)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from rasterlearn.export import export_training_data
from rasterlearn.formats.export_reader import read_export_folder


def sample_paths() -> tuple[Path, Path]:
    """The bundled NEON OSBS_029 tile and its tree-crown polygons."""
    root = Path(str(resources.files("rasterlearn") / "sample_data"))
    return root / "OSBS_029.tif", root / "OSBS_029_trees.gpkg"


def run_demo(out_folder: str | Path, overwrite: bool = True) -> Iterator[str]:
    """Export the NEON sample as detection and pixel-classification training data.

    Yields:
        One line per result, saying where it is.
    """
    raster, trees = sample_paths()
    out_folder = Path(out_folder)
    for fmt, name in (("PASCAL_VOC_rectangles", "trees_voc"), ("Classified_Tiles", "trees_pixels")):
        result = export_training_data(
            raster,
            out_folder / name,
            trees,
            metadata_format=fmt,
            tile_size_x=128,
            tile_size_y=128,
            stride_x=64,
            stride_y=64,
            overwrite=overwrite,
        )
        export = read_export_folder(result.out_folder)
        yield (
            f"{fmt}: {result.num_chips} chips, {sum(len(c.objects) for c in export.chips)} boxes "
            f"-> {result.out_folder}"
        )
