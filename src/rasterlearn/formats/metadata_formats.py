"""The metadata formats (``metadata_format`` keywords) and what each one holds."""

from __future__ import annotations

from dataclasses import dataclass

from rasterlearn.errors import ParameterError


@dataclass(frozen=True)
class MetadataFormat:
    """One export format.

    Attributes:
        keyword: The ArcGIS keyword (``MetaDataMode``).
        labels: What a chip's label is: ``rectangles``, ``pixels``, ``instances``,
            ``tile`` (one class per chip), ``multitile`` (several classes per chip),
            ``folder`` (class = image sub-folder) or ``none``.
        per_feature: Chips are cut around each feature instead of on a tile grid.
        needs_class_data: The format cannot be written without labels.
    """

    keyword: str
    labels: str
    per_feature: bool = False
    needs_class_data: bool = True

    @property
    def output_features(self) -> bool:
        """``OutputFeatures`` of the accumulated stats: labels come as features, not pixels."""
        return self.labels not in ("pixels", "none")

    @property
    def pixel_stats(self) -> bool:
        return self.labels in ("pixels", "instances")


METADATA_FORMATS = {
    f.keyword: f
    for f in (
        MetadataFormat("PASCAL_VOC_rectangles", "rectangles"),
        MetadataFormat("KITTI_rectangles", "rectangles"),
        MetadataFormat("Classified_Tiles", "pixels"),
        MetadataFormat("RCNN_Masks", "instances"),
        MetadataFormat("Labeled_Tiles", "tile", per_feature=True),
        MetadataFormat("MultiLabeled_Tiles", "multitile"),
        MetadataFormat("Imagenet", "folder", per_feature=True),
        MetadataFormat("Export_Tiles", "none", needs_class_data=False),
    )
}


CHANGE_DETECTION = "ChangeDetection"
"""arcgis.learn's dataset type of ``Classified_Tiles`` with ``images2/``: change-detection pairs
(before in ``images/``, after in ``images2/``, change classes in ``labels/``)."""


def metadata_format(keyword: str) -> MetadataFormat:
    """The format for a keyword, matched case-insensitively.

    Raises:
        ParameterError: for an unknown keyword.
    """
    for key, fmt in METADATA_FORMATS.items():
        if key.lower() == keyword.lower():
            return fmt
    raise ParameterError(
        f"unknown metadata format '{keyword}'", f"use one of {', '.join(METADATA_FORMATS)}"
    )
