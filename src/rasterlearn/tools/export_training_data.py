"""Export Training Data For Deep Learning: imagery + labels -> chips in ArcGIS's folder layout."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import shapely

from rasterlearn.errors import InputError, ParameterError, RasterLearnError
from rasterlearn.execution.dask import (
    dask_client,
    parse_cluster,
)
from rasterlearn.execution.processes import ProcessLanes
from rasterlearn.execution.threads import default_workers
from rasterlearn.export.class_data import class_table, load_class_data
from rasterlearn.export.plan import grid_chip_count, plan_chips
from rasterlearn.export.settings import (
    CROP_MODES,
    REFERENCE_SYSTEMS,
    ExportSettings,
    choice,
    rotation_angles,
)
from rasterlearn.export.write import ExportJob, SourceSpec, start_lanes_early, write_chips
from rasterlearn.formats.chip_images import CHIP_IMAGE_FORMATS, chip_image_format
from rasterlearn.formats.chips import (
    ACCUMULATED_STATS_FILE,
    EMD_FILE,
    STATS_FILE,
    ClassInfo,
    ExportWriter,
    accumulated_stats,
    training_emd,
    write_json,
)
from rasterlearn.formats.metadata_formats import METADATA_FORMATS
from rasterlearn.formats.metadata_formats import metadata_format as _metadata_format
from rasterlearn.geo.pair import AlignedRaster, check_pair
from rasterlearn.geo.raster import (
    PROCESSING_MODES,
    RasterInfo,
    RasterSource,
    bounded_gdal_cache,
    open_raster_input,
)
from rasterlearn.geo.vector import FeatureSet, load_mask
from rasterlearn.outputs import atomic_output
from rasterlearn.progress import progress_bar
from rasterlearn.tools.declaration import INPUT, Parameter, declare
from rasterlearn.tools.parameters import (
    CLUSTER,
    IN_RASTER,
    NUM_WORKERS,
    OVERWRITE,
    PROCESSING_MODE,
    SCHEDULER,
    output,
)

PAIRED_FORMATS = ("Classified_Tiles", "Export_Tiles")
"""The metadata formats that take an additional input raster (``images2/``)."""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        out_folder: The export folder.
        metadata_format: Its ``MetaDataMode``.
        num_chips: Number of image chips.
        num_features: Number of labelled objects over all chips (0 for pixel formats).
        classes: The class table.
    """

    out_folder: Path
    metadata_format: str
    num_chips: int
    num_features: int
    classes: list[ClassInfo]


def export_training_data(
    in_raster: str | Path,
    out_folder: str | Path,
    in_class_data: str | Path | None = None,
    image_chip_format: str = "TIFF",
    tile_size_x: int = 256,
    tile_size_y: int = 256,
    stride_x: int = 128,
    stride_y: int = 128,
    output_nofeature_tiles: bool = False,
    metadata_format: str = "PASCAL_VOC_rectangles",
    class_value_field: str | None = None,
    buffer_radius: float = 0.0,
    in_mask_polygons: str | Path | None = None,
    rotation_angle: float = 0.0,
    reference_system: str = "MAP_SPACE",
    processing_mode: str = "PROCESS_AS_MOSAICKED_IMAGE",
    blacken_around_feature: bool = False,
    crop_mode: str = "FIXED_SIZE",
    in_raster2: str | Path | None = None,
    min_polygon_overlap_ratio: float = 0.0,
    extent: tuple[float, float, float, float] | None = None,
    cell_size: float | None = None,
    max_nodata_fraction: float = 1.0,
    overwrite: bool = False,
    num_workers: int | None = None,
    progress: bool | None = None,
    cluster: str | None = None,
    scheduler: str | None = None,
) -> ExportResult:
    """Export Training Data For Deep Learning: cut image chips and labels in ArcGIS's layout.

    Parameters follow ArcGIS's tool (names in snake_case, same defaults).

    Returns:
        What was written.

    Raises:
        RasterLearnError: for any input or parameter the user must fix; nothing is left behind.
    """
    fmt = _metadata_format(metadata_format)
    for name, value in (
        ("tile_size_x", tile_size_x),
        ("tile_size_y", tile_size_y),
        ("stride_x", stride_x),
        ("stride_y", stride_y),
    ):
        if int(value) <= 0:
            raise ParameterError(
                f"{name} must be a positive number of pixels, got {value}", "use e.g. 256"
            )
    if not 0 <= min_polygon_overlap_ratio <= 1:
        raise ParameterError("min_polygon_overlap_ratio must be between 0 and 1", "use e.g. 0.5")
    if not 0 <= max_nodata_fraction <= 1:
        raise ParameterError("max_nodata_fraction must be between 0 and 1", "use e.g. 0.5")
    if cell_size is not None and cell_size <= 0:
        raise ParameterError(f"cell size must be positive, got {cell_size}", "give it in map units")
    if fmt.needs_class_data and in_class_data is None:
        raise ParameterError(f"metadata format {fmt.keyword} needs class data", "give --class-data")
    if in_raster2 is not None and fmt.keyword not in PAIRED_FORMATS:
        raise ParameterError(
            f"an additional input raster does not fit metadata format {fmt.keyword}",
            f"export change-detection pairs as {' or '.join(PAIRED_FORMATS)}",
        )
    parse_cluster(cluster, scheduler)
    settings = ExportSettings(
        fmt=fmt,
        chip_format=chip_image_format(image_chip_format),
        tile_height=int(tile_size_y),
        tile_width=int(tile_size_x),
        stride_y=int(stride_y),
        stride_x=int(stride_x),
        angles=rotation_angles(rotation_angle),
        output_nofeature_tiles=output_nofeature_tiles,
        class_value_field=class_value_field,
        buffer_radius=float(buffer_radius or 0.0),
        reference_system=choice(reference_system, REFERENCE_SYSTEMS, "reference system"),
        processing_mode=choice(processing_mode, PROCESSING_MODES, "processing mode"),
        blacken_around_feature=blacken_around_feature,
        crop_mode=choice(crop_mode, CROP_MODES, "crop mode"),
        min_polygon_overlap_ratio=float(min_polygon_overlap_ratio),
        extent=tuple(extent) if extent is not None else None,
        cell_size=cell_size,
        max_nodata_fraction=float(max_nodata_fraction),
        overwrite=overwrite,
        num_workers=num_workers,
        progress=progress,
    )
    if in_raster2 is not None and settings.processing_mode == "PROCESS_ITEMS_SEPARATELY":
        raise ParameterError(
            "an additional input raster pairs with one mosaic, not with items processed separately",
            "use PROCESS_AS_MOSAICKED_IMAGE",
        )
    with bounded_gdal_cache():
        return _export(
            (in_raster, in_raster2),
            out_folder,
            in_class_data,
            in_mask_polygons,
            settings,
            (cluster, scheduler),
        )


def _export(
    rasters: tuple[str | Path, str | Path | None],
    out_folder: str | Path,
    in_class_data: str | Path | None,
    in_mask_polygons: str | Path | None,
    s: ExportSettings,
    where: tuple[str | None, str | None] = (None, None),
) -> ExportResult:
    separately = s.processing_mode == "PROCESS_ITEMS_SEPARATELY"
    sources = open_raster_input(rasters[0], separately, s.cell_size, extent=s.extent)
    class_source = None
    second = _second_raster(rasters[1], sources[0]) if rasters[1] is not None else None
    try:
        first = sources[0].info
        for src in sources:
            s.chip_format.check(src.info.count, src.info.dtype)
            if (src.info.count, src.info.dtype) != (first.count, first.dtype):
                raise InputError(
                    f"{src.name} has {src.info.count} {src.info.dtype} bands, "
                    f"unlike {sources[0].name}",
                    "export rasters of one band layout together",
                )
            grid = src.info.grid
            if grid.height < s.tile_height or grid.width < s.tile_width:
                raise ParameterError(
                    f"tile size {s.tile_width} x {s.tile_height} is larger than raster "
                    f"{src.name} ({grid.width} x {grid.height} px)",
                    "use a smaller --tile-size-x/--tile-size-y",
                )
        # a large export's lane processes import what they need while the features load
        estimate = sum(grid_chip_count(src, s) for src in sources) if where == (None, None) else 0
        early = start_lanes_early(estimate, default_workers(s.num_workers))
        with early or contextlib.nullcontext():
            features, class_source = load_class_data(in_class_data, first, s)
            mask = (
                load_mask(in_mask_polygons, first.grid.crs)
                if in_mask_polygons is not None
                else None
            )
            classes = class_table(features, class_source)
            return _run_export(
                sources, out_folder, s, features, class_source, classes, mask, where, second, early
            )
    finally:
        for src in (*sources, class_source, second):
            if src is not None:
                src.close()


def _second_raster(in_raster2: str | Path, first: RasterSource) -> AlignedRaster:
    """The additional raster, read on the first raster's grid.

    Raises:
        InputError: when its bands differ from the first raster's or it lies elsewhere.
    """
    own = open_raster_input(in_raster2)[0]
    try:
        check_pair(first, own)
    finally:
        own.close()
    return AlignedRaster(own.spec, own.name, first.info.grid)


def _run_export(
    sources: list[RasterSource],
    out_folder: str | Path,
    s: ExportSettings,
    features: FeatureSet | None,
    class_source: RasterSource | None,
    classes: list[ClassInfo],
    mask: shapely.Geometry | None,
    where: tuple[str | None, str | None] = (None, None),
    second: AlignedRaster | None = None,
    started: ProcessLanes | None = None,
) -> ExportResult:
    plans_per_source = []
    skipped: list[RasterLearnError] = []
    for src in sources:
        try:
            plans_per_source.append(plan_chips(src, s, features, mask))
        except (InputError, ParameterError) as err:
            if len(sources) == 1:
                raise
            skipped.append(err)  # an item outside the features or extent adds no chips
            plans_per_source.append([])
    total = sum(len(p) for p in plans_per_source)
    if total == 0 and skipped:
        raise skipped[0]
    if total == 0:
        raise InputError(
            "no chip fits inside the mask polygons and the extent",
            "check --mask-polygons and --extent",
        )
    first = sources[0].info
    with (
        atomic_output(out_folder, overwrite=s.overwrite, folder=True) as tmp,
        dask_client(*where) as client,
    ):
        writer = ExportWriter(tmp, s.fmt, s.chip_format, classes, paired=second is not None)
        job = ExportJob(
            token=uuid.uuid4().hex,
            folder=tmp,
            settings=s,
            sources=tuple(SourceSpec.of(src) for src in sources),
            features=features,
            class_source=SourceSpec.of(class_source) if class_source else None,
            classes=tuple(classes),
            second=SourceSpec.of(second) if second is not None else None,
        )
        lanes = default_workers(s.num_workers)
        with progress_bar("Exporting chips", total, s.progress) as advance:
            write_chips(writer, job, plans_per_source, advance, client, lanes, started)
        if writer.num_chips == 0:
            raise InputError(
                "no chip was written: no tile holds labelled features with enough valid pixels",
                "check the class data overlaps the raster's valid pixels, "
                "or pass --output-nofeature-tiles",
            )
        _write_metadata(tmp, writer, first, s, second.info if second is not None else None)
    return ExportResult(
        Path(out_folder), s.fmt.keyword, writer.num_chips, writer.num_features, classes
    )


def _write_metadata(
    folder: Path,
    writer: ExportWriter,
    info: RasterInfo,
    s: ExportSettings,
    info2: RasterInfo | None = None,
) -> None:
    writer.write_map()
    (folder / STATS_FILE).write_text(writer.stats_text(info.count, s.tile_height, s.tile_width))
    write_json(
        folder / ACCUMULATED_STATS_FILE,
        accumulated_stats(writer, info.count, s.tile_height, s.tile_width),
    )
    emd = training_emd(
        writer,
        s.tile_height,
        s.tile_width,
        s.reference_system,
        info.band_names,
        info.grid.cell_size if info.is_georeferenced else None,
        info.grid.crs,
        "Fixed_Size" if s.crop_mode == "FIXED_SIZE" else "Variable_Size",
        s.blacken_around_feature,
        info2.band_names if info2 is not None else (),
    )
    write_json(folder / EMD_FILE, emd)


def _result_lines(result: ExportResult) -> list[str]:
    features = f" with {result.num_features} features" if result.num_features else ""
    return [
        f"Wrote {result.num_chips} {result.metadata_format} chips{features} to {result.out_folder}"
    ]


TOOL = declare(
    export_training_data,
    label="Export Training Data For Deep Learning",
    rest_name="ExportTrainingDataforDeepLearning",
    command="export-training-data",
    summary=("Export Training Data For Deep Learning: image chips and labels in ArcGIS's layout."),
    parameters=[
        IN_RASTER,
        output(
            "out_folder",
            "folder",
            "Output folder (must be empty or new, unless overwrite).",
            "Output Folder",
            "outputLocation",
        ),
        Parameter(
            "in_class_data",
            "features",
            "Labelled features (polygons; points/lines with buffer_radius), a classified "
            "raster, or a folder of classified rasters.",
            INPUT,
            label="Input Feature Class Or Classified Raster Or Table",
            rest_name="inputClassData",
            flag="--class-data",
        ),
        Parameter(
            "image_chip_format",
            "string",
            "Chip image format (PNG/JPEG: at most 3 bands of 8-bit data).",
            label="Image Format",
            rest_name="chipFormat",
            choices=tuple(CHIP_IMAGE_FORMATS),
        ),
        Parameter("tile_size_x", "integer", "Chip width in pixels.", label="Tile Size X"),
        Parameter("tile_size_y", "integer", "Chip height in pixels.", label="Tile Size Y"),
        Parameter("stride_x", "integer", "Horizontal chip step in pixels.", label="Stride X"),
        Parameter("stride_y", "integer", "Vertical chip step in pixels.", label="Stride Y"),
        Parameter(
            "output_nofeature_tiles",
            "boolean",
            "Also write chips without labels (ALL_TILES).",
            label="Output No Feature Tiles",
            rest_name="exportAllTiles",
            off_flag="--only-tiles-with-features",
        ),
        Parameter(
            "metadata_format",
            "string",
            "Label format of the chips.",
            label="Metadata Format",
            choices=tuple(METADATA_FORMATS),
        ),
        Parameter(
            "class_value_field",
            "string",
            "Integer class field; default 'value'/'classvalue', else one class.",
            label="Class Value Field",
        ),
        Parameter(
            "buffer_radius",
            "float",
            "Buffer around features, in the features' map units.",
            label="Buffer Radius",
        ),
        Parameter(
            "in_mask_polygons",
            "features",
            "Only chips lying completely inside these polygons are written.",
            INPUT,
            label="Input Mask Polygons",
            rest_name="inputMaskPolygons",
            flag="--mask-polygons",
        ),
        Parameter(
            "rotation_angle",
            "float",
            "Also write chips rotated by multiples of this angle (degrees).",
            label="Rotation Angle",
        ),
        Parameter(
            "reference_system",
            "string",
            "Image space of the chips (recorded as ImageSpaceUsed).",
            label="Reference System",
            choices=REFERENCE_SYSTEMS,
        ),
        PROCESSING_MODE,
        Parameter(
            "blacken_around_feature",
            "boolean",
            "Labeled_Tiles: zero the pixels outside the feature.",
            label="Blacken Around Feature",
        ),
        Parameter(
            "crop_mode",
            "string",
            "Labeled_Tiles/Imagenet: chips of the tile size centred on the feature, or cropped "
            "to its bounding box.",
            label="Crop Mode",
            choices=CROP_MODES,
        ),
        Parameter(
            "in_raster2",
            "raster",
            "Additional input raster (Classified_Tiles: the 'after' image of change detection; "
            "Export_Tiles: image pairs): chips of it on the same grid go to images2/. It may "
            "differ in cell size and coordinate system; it is read on in_raster's grid.",
            INPUT,
            label="Additional Input Raster",
            rest_name="additionalInputRaster",
            flag="--in-raster2",
        ),
        Parameter(
            "min_polygon_overlap_ratio",
            "float",
            "Drop a feature from a chip when less than this fraction of it lies inside the chip.",
            label="Minimum Polygon Overlap Ratio",
        ),
        Parameter(
            "extent",
            "extent",
            "Processing extent XMIN YMIN XMAX YMAX in the raster's coordinates.",
            label="Processing Extent",
        ),
        Parameter(
            "cell_size",
            "float",
            "Resample the raster to this cell size (map units).",
            label="Cell Size",
        ),
        Parameter(
            "max_nodata_fraction",
            "float",
            "Skip chips with a larger fraction of nodata pixels (chips entirely nodata are always "
            "skipped).",
            label="Maximum NoData Fraction",
        ),
        OVERWRITE,
        NUM_WORKERS,
        CLUSTER,
        SCHEDULER,
    ],
    report=_result_lines,
    python_only=("progress",),
)
