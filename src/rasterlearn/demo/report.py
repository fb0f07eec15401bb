"""The demo's HTML report: one self-contained page with the split, the results and the figures.

Every figure is a PNG embedded as a data URI, so ``report.html`` can be mailed or opened
anywhere without the rest of the output folder (links to the other outputs are relative).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import rasterio.windows
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

from rasterlearn.demo.sample import Split

TREE_COLOR = "#2ca02c"
DETECTION_COLOR = "#ff3b30"
BACKGROUND_COLOR = "#d8cfb8"
TRAIN_COLOR = "#1f77b4"
HELDOUT_COLOR = "#ff7f0e"


@dataclass(frozen=True)
class DemoFigures:
    """The headline figures of the demo, all on the held-out part.

    Attributes:
        ap50: Detection average precision at IoU 0.5 (all-point interpolated).
        precision: Detection precision at the detection threshold.
        recall: Detection recall at the detection threshold.
        f1: Detection F1 score at the detection threshold.
        pixel_accuracy: Overall pixel accuracy (trees and background).
        tree_iou: Intersection over union of the tree class.
    """

    ap50: float
    precision: float
    recall: float
    f1: float
    pixel_accuracy: float
    tree_iou: float


def _png(fig: Figure, alt: str) -> str:
    """A figure as an ``<img>`` with the PNG embedded (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _rgb(raster: Path) -> tuple[np.ndarray, tuple[float, float, float, float], rasterio.Affine]:
    """The first three bands as an RGB array, its plot extent and transform."""
    with rasterio.open(raster) as src:
        image = src.read(indexes=list(range(1, min(3, src.count) + 1)))
        bounds, transform = src.bounds, src.transform
    if image.shape[0] < 3:
        image = np.repeat(image[:1], 3, axis=0)
    image = np.moveaxis(image, 0, -1)
    if image.dtype != np.uint8:
        low, high = np.percentile(image, (2, 98))
        image = np.clip((image - low) / max(high - low, 1e-9), 0, 1)
    return image, (bounds.left, bounds.right, bounds.bottom, bounds.top), transform


def _draw_boxes(ax: plt.Axes, frame: gpd.GeoDataFrame, color: str, **style: object) -> None:
    for minx, miny, maxx, maxy in frame.geometry.bounds.to_numpy():
        ax.add_patch(
            Rectangle((minx, miny), maxx - minx, maxy - miny, fill=False, color=color, **style)
        )


def _split_figure(raster: Path, split: Split) -> str:
    image, extent, _ = _rgb(raster)
    train, held = gpd.read_file(split.train_trees), gpd.read_file(split.heldout_trees)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(image, extent=extent)
    for (xmin, ymin, xmax, ymax), color in (
        (split.train_extent, TRAIN_COLOR),
        (split.heldout_extent, HELDOUT_COLOR),
    ):
        ax.add_patch(
            Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False, color=color, lw=3)
        )
    _draw_boxes(ax, train, TRAIN_COLOR, lw=1)
    _draw_boxes(ax, held, HELDOUT_COLOR, lw=1.5)
    ax.legend(
        handles=[
            Patch(fill=False, edgecolor=TRAIN_COLOR, label=f"training ({len(train)} trees)"),
            Patch(fill=False, edgecolor=HELDOUT_COLOR, label=f"held out ({len(held)} trees)"),
        ],
        loc="upper left",
        fontsize=8,
    )
    ax.set_axis_off()
    return _png(fig, "the tile with the training and held-out parts and their tree crowns")


def _window_of(raster: Path, extent: tuple[float, float, float, float]) -> rasterio.windows.Window:
    with rasterio.open(raster) as src:
        return (
            rasterio.windows.from_bounds(*extent, transform=src.transform)
            .round_offsets()
            .round_lengths()
        )


def _heldout_rgb(
    raster: Path, split: Split
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    window = _window_of(raster, split.heldout_extent)
    with rasterio.open(raster) as src:
        image = np.moveaxis(src.read(indexes=[1, 2, 3], window=window), 0, -1)
        left, bottom, right, top = rasterio.windows.bounds(window, src.transform)
    return image, (left, right, bottom, top)


def _detection_figure(raster: Path, split: Split, detections: Path) -> str:
    image, extent = _heldout_rgb(raster, split)
    truth, found = gpd.read_file(split.heldout_trees), gpd.read_file(detections)
    height = 7.0
    width = height * (extent[1] - extent[0]) / (extent[3] - extent[2]) + 0.5
    fig, ax = plt.subplots(figsize=(max(width, 3.2), height))
    ax.imshow(image, extent=extent)
    _draw_boxes(ax, truth, TREE_COLOR, lw=2)
    _draw_boxes(ax, found, DETECTION_COLOR, lw=1.2, ls="--")
    if "Confidence" in found:
        for geom, score in zip(found.geometry, found["Confidence"], strict=True):
            minx, _, _, maxy = geom.bounds
            ax.text(minx, maxy, f"{score:.0f}", color=DETECTION_COLOR, fontsize=6, va="top")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.legend(
        handles=[
            Patch(fill=False, edgecolor=TREE_COLOR, label=f"ground truth ({len(truth)})"),
            Patch(fill=False, edgecolor=DETECTION_COLOR, label=f"detected ({len(found)})"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.01),
        fontsize=8,
    )
    ax.set_axis_off()
    return _png(fig, "held-out imagery with ground-truth and detected tree crowns")


def _class_image(values: np.ndarray) -> np.ndarray:
    """Class values (1 tree, 2 background, 0 not classified) as colours."""
    colors = np.array(
        [
            matplotlib.colors.to_rgb("white"),
            matplotlib.colors.to_rgb(TREE_COLOR),
            matplotlib.colors.to_rgb(BACKGROUND_COLOR),
        ]
    )
    return colors[np.clip(values, 0, 2)]


def _pixel_figure(raster: Path, split: Split, classified: Path) -> str:
    image, extent = _heldout_rgb(raster, split)
    with rasterio.open(classified) as src:
        predicted = src.read(1)
        shape, transform = (src.height, src.width), src.transform
    reference = gpd.read_file(split.heldout_pixels)
    truth = rasterio.features.rasterize(
        zip(reference.geometry, reference["ClassValue"], strict=True),
        out_shape=shape,
        transform=transform,
        fill=0,
        dtype="uint8",
    )
    height = 6.0
    aspect = (extent[1] - extent[0]) / (extent[3] - extent[2])
    fig, axes = plt.subplots(1, 3, figsize=(max(3 * height * aspect + 1, 6), height))
    panels = (
        (image, "imagery"),
        (_class_image(predicted), "classified (UNET)"),
        (_class_image(truth), "reference"),
    )
    for ax, (data, title) in zip(axes, panels, strict=True):
        ax.imshow(data, extent=extent, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.legend(
        handles=[
            Patch(color=TREE_COLOR, label="tree"),
            Patch(color=BACKGROUND_COLOR, label="background"),
        ],
        loc="lower center",
        ncol=2,
        fontsize=8,
    )
    return _png(fig, "held-out imagery, classified raster and reference")


def _loss_figure(model_folders: Mapping[str, Path]) -> str:
    """Training and validation loss per epoch of each model, from its training log.

    The epoch of lowest validation loss, whose weights the model folder holds, is marked.
    """
    fig, axes = plt.subplots(1, len(model_folders), figsize=(5 * len(model_folders), 3.5))
    for ax, (name, folder) in zip(np.atleast_1d(axes), model_folders.items(), strict=True):
        log = folder / "ModelCharacteristics" / "training_validation_loss.json"
        epochs = json.loads(log.read_text())["training_validation_loss_per_epoch"]
        x = np.array([e["epoch"] for e in epochs])
        valid = np.array([float(e["validation_loss"]) for e in epochs])
        ax.plot(x, [float(e["training_loss"]) for e in epochs], label="training loss")
        ax.plot(x, valid, label="validation loss")
        if np.isfinite(valid).any():
            best = int(np.nanargmin(valid))
            ax.plot(x[best], valid[best], "o", color="black", label="saved model")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        low, high = ax.get_ylim()
        minor = FormatStrFormatter("%g") if high < 10 * low else NullFormatter()
        ax.yaxis.set_minor_formatter(minor)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, "training and validation loss per epoch")


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="", border=0)


def _link(target: Path, report: Path, label: str | None = None) -> str:
    relative = os.path.relpath(target, report.parent)
    return (
        f'<a href="{html.escape(Path(relative).as_posix())}">'
        f"{html.escape(label or Path(relative).as_posix())}</a>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.figures img { max-width: 100%; }
.headline td { font-size: 1.1em; }
.note { color: #555; font-size: 0.92em; }
"""


def render_demo_report(
    path: str | Path,
    *,
    raster: Path,
    split: Split,
    detections: Path,
    classified: Path,
    detection_table: pd.DataFrame,
    pixel_table: pd.DataFrame,
    model_folders: Mapping[str, Path],
    figures: DemoFigures,
    minutes: Mapping[str, float],
    settings: Mapping[str, str] | None = None,
    quick: bool = False,
) -> Path:
    """Write the demo's self-contained HTML report.

    Args:
        path: The ``.html`` file to write (replaced if it exists).
        raster: The sample raster.
        split: The training and held-out parts and their label files.
        detections: Detected tree polygons in the held-out part.
        classified: Classified raster of the held-out part (1 tree, 2 background).
        detection_table: The detection accuracy table (``Class``, ``Precision`` ...).
        pixel_table: The pixel accuracy table (``Class``, ``IoU`` ...).
        model_folders: Model folder per model type.
        figures: The headline figures.
        minutes: Minutes per step.
        settings: What the run used (chips, epochs, threshold ...), shown as a table.
        quick: Whether the demo ran in quick mode (fewer epochs, smaller chips).

    Returns:
        The report's path.
    """
    path = Path(path)
    train_cols, held_cols = split.train_columns, split.heldout_columns
    headline = pd.DataFrame(
        [
            ("Detection AP50 (FCOS)", figures.ap50),
            ("Detection precision", figures.precision),
            ("Detection recall", figures.recall),
            ("Detection F1", figures.f1),
            ("Pixel accuracy (UNET)", figures.pixel_accuracy),
            ("Tree IoU (UNET)", figures.tree_iou),
        ],
        columns=["Held-out figure", "Value"],
    )
    steps = pd.DataFrame(
        [(step, f"{m:.2f}") for step, m in [*minutes.items(), ("total", sum(minutes.values()))]],
        columns=["Step", "Minutes"],
    )
    used = pd.DataFrame(list((settings or {}).items()), columns=["Setting", "Value"])
    model_links = ", ".join(
        _link(folder, path, f"{name} model folder") for name, folder in model_folders.items()
    )
    loss_graphs = ", ".join(
        _link(folder / "ModelCharacteristics" / "loss_graph.png", path, f"{name} loss_graph.png")
        for name, folder in model_folders.items()
    )
    mode = " (quick mode: fewer epochs, smaller chips)" if quick else ""
    body = f"""
<h1>rasterlearn demo: tree crowns in the NEON OSBS_029 tile{html.escape(mode)}</h1>
<p>A 400 x 400 px aerial RGB tile (0.1 m pixels, {split.num_train_trees + split.num_heldout_trees}
hand-drawn crowns). Trees centred left of column {held_cols[0]} train the models; the
{split.num_heldout_trees} others are held out. The training part is columns
{train_cols[0]}-{train_cols[1] - 1} (it ends where the first held-out crown begins, so no pixel
of a held-out tree is trained on); the held-out part is columns {held_cols[0]}-{held_cols[1] - 1}.
An FCOS detector and a UNET pixel classifier (ResNet-18, random initial weights) were trained
on chips exported from the training part, run over the held-out part with Detect Objects and
Classify Pixels, and scored with Compute Accuracy For Object Detection and Compute Pixel
Accuracy. Outputs: {model_links}, {_link(detections, path)}, {_link(classified, path)}.</p>

<h2>Headline figures (held-out part)</h2>
<div class="headline">{_table(headline)}</div>
<p class="note">AP50: all-point interpolated average precision at IoU 0.5 over the
detections ranked by confidence; precision, recall and F1 count every detection written
(those above the detection threshold). Pixel accuracy counts tree and background pixels.</p>

<h2>The split</h2>
<div class="figures">{_split_figure(raster, split)}</div>

<h2>Detections on the held-out part</h2>
<div class="figures">{_detection_figure(raster, split, detections)}
<div>{_table(detection_table)}
<p class="note">Full report: {_link(path.parent / "accuracy" / "detection_accuracy.html", path)}
</p></div></div>

<h2>Pixel classification of the held-out part</h2>
<div class="figures">{_pixel_figure(raster, split, classified)}
<div>{_table(pixel_table)}
<p class="note">Full report: {_link(path.parent / "accuracy" / "pixel_accuracy.html", path)}
</p></div></div>

<h2>Training</h2>
{_loss_figure(model_folders)}
<p class="note">From each model folder's ModelCharacteristics/training_validation_loss.json
(also drawn by the Train tool: {loss_graphs}).</p>

<h2>Settings and minutes per step</h2>
<div class="figures">{_table(used)}{_table(steps)}</div>
"""
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>rasterlearn demo</title><style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
