"""What a trained model folder shows: ModelCharacteristics/ and model_metrics.html (§6.4)."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

CHARACTERISTICS = "ModelCharacteristics"


@dataclass
class EpochRecord:
    """One epoch of the training log (losses written as strings, as ArcGIS does)."""

    epoch: int
    training_loss: float
    validation_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        h, rest = divmod(round(self.seconds), 3600)
        m, s = divmod(rest, 60)
        return {
            "epoch": self.epoch,
            "training_loss": f"{self.training_loss:.6f}",
            "validation_loss": f"{self.validation_loss:.6f}",
            **{k: float(v) for k, v in self.metrics.items()},
            "time": f"{h:02d}:{m:02d}:{s:02d}",
        }


def write_loss_log(folder: Path, epochs: list[EpochRecord]) -> Path:
    """``training_validation_loss.json`` in the shape the Pro Train tool writes."""
    path = folder / CHARACTERISTICS / "training_validation_loss.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"training_validation_loss_per_epoch": [e.to_json() for e in epochs]}
    path.write_text(json.dumps(content, indent=4) + "\n")
    return path


def plot_losses(folder: Path, epochs: list[EpochRecord]) -> Path:
    """``loss_graph.png``: training and validation loss per epoch."""
    path = folder / CHARACTERISTICS / "loss_graph.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    x = [e.epoch for e in epochs]
    ax.plot(x, [e.training_loss for e in epochs], marker="o", label="Training loss")
    ax.plot(x, [e.validation_loss for e in epochs], marker="o", label="Validation loss")
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(folder: Path, matrix: np.ndarray, names: list[str]) -> Path:
    """``confusion_matrix.png`` (rows: ground truth, columns: predicted)."""
    path = folder / CHARACTERISTICS / "confusion_matrix.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Ground truth")
    peak = matrix.max() if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(int(v)),
            ha="center",
            va="center",
            color="white" if peak and v > peak / 2 else "black",
        )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_results(
    folder: Path,
    images: list[np.ndarray],
    truths: list[np.ndarray | list],
    predictions: list[np.ndarray | list],
    kind: str,
    colors: list[tuple[int, int, int]],
) -> Path:
    """``show_results.png``: validation chips, ground truth beside prediction.

    Args:
        folder: Model folder.
        images: RGB-displayable chips as (H, W, 3) floats in 0..1.
        truths: Per chip, a class-index raster (``kind='pixels'``), a list of boxes
            ``(class_index, x0, y0, x1, y1)`` (``'boxes'``) or a label string (``'labels'``).
        predictions: Same shapes as ``truths``.
        kind: ``pixels``, ``boxes`` or ``labels``.
        colors: Display colour per class index (index 0 = background).
    """
    path = folder / CHARACTERISTICS / "show_results.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(images))
    fig, axes = plt.subplots(n, 2, figsize=(6, 3 * n), dpi=100, squeeze=False)
    palette = np.array([(0, 0, 0), *colors[1:]] if colors else [(0, 0, 0)], dtype=float) / 255
    for row, (image, truth, pred) in enumerate(zip(images, truths, predictions, strict=True)):
        for col, (label, title) in enumerate(((truth, "Ground truth"), (pred, "Prediction"))):
            ax = axes[row][col]
            ax.imshow(image)
            if kind == "pixels":
                overlay = palette[np.clip(label, 0, len(palette) - 1)]
                alpha = (np.asarray(label) > 0) * 0.45
                ax.imshow(np.dstack([overlay, alpha]))
            elif kind == "boxes":
                for cls, x0, y0, x1, y1 in label:
                    color = palette[int(cls) % len(palette)] if len(palette) > 1 else (1, 1, 0)
                    ax.add_patch(
                        plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, ec=color)
                    )
            else:
                title = f"{title}: {label}"
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def write_metrics_html(
    folder: Path,
    model_name: str,
    backbone: str,
    learning_rate: str,
    metrics: dict[str, str | float],
    per_class: dict[str, dict[str, float]] | None,
    images: list[Path],
    warnings: Sequence[str] = (),
) -> Path:
    """``model_metrics.html``: model, learning rate (and why), metrics, warnings, per-class
    table and the plots."""
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in metrics.items()
    )
    table = ""
    if per_class:
        columns = sorted({c for v in per_class.values() for c in v})
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            f"<tr><th>{html.escape(name)}</th>"
            + "".join(f"<td>{values.get(c, float('nan')):.4f}</td>" for c in columns)
            + "</tr>"
            for name, values in per_class.items()
        )
        table = f"<h2>Per class</h2><table><tr><th>Class</th>{head}</tr>{body}</table>"
    notes = "".join(f"<p><strong>Warning:</strong> {html.escape(w)}</p>" for w in warnings)
    figures = "".join(
        f"<h2>{html.escape(p.stem.replace('_', ' '))}</h2>{_embed(p)}" for p in images
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(model_name)} metrics</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%}}</style>
</head><body>
<h1>{html.escape(model_name)}</h1>
<table><tr><th>Backbone</th><td>{html.escape(backbone)}</td></tr>
<tr><th>Learning rate</th><td>{html.escape(learning_rate)}</td></tr>{rows}</table>
{notes}{table}{figures}
</body></html>
"""
    path = folder / "model_metrics.html"
    path.write_text(page, encoding="utf-8")
    return path
