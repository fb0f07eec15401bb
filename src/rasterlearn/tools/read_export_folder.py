"""Describe a training-data folder (ours or ArcGIS Pro's): format, chip size, classes, labels."""

from __future__ import annotations

from rasterlearn.formats.export_reader import ExportFolder, read_export_folder
from rasterlearn.tools.declaration import INPUT, Parameter, declare


def _result_lines(export: ExportFolder) -> list[str]:
    lines = [
        f"{export.path}: {export.metadata_format}, {len(export.chips)} chips of "
        f"{export.band_count} x {export.tile_height} x {export.tile_width}, {export.image_space}"
    ]
    chips = export.chips_per_class()
    objects = export.objects_per_class()
    for c in export.classes:
        line = f"  class {c.value} {c.name}: {chips.get(c.value, 0)} chips"
        if objects:
            line += f", {objects.get(c.value, 0)} objects"
        lines.append(line)
    if export.dropped_chips or export.dropped_objects:
        lines.append(
            f"  left out: {export.dropped_chips} chips without labels, "
            f"{export.dropped_objects} objects of unknown classes"
        )
    return lines


TOOL = declare(
    read_export_folder,
    label="Describe Training Data",
    rest_name="DescribeTrainingData",
    command="export-info",
    summary="Describe a training-data folder: format, chip size, classes and label counts.",
    parameters=[
        Parameter(
            "folder",
            "folder",
            "A training-data folder (ours or ArcGIS Pro's).",
            INPUT,
            label="Training Data Folder",
            rest_name="inFolder",
            positional=True,
        )
    ],
    report=_result_lines,
)
