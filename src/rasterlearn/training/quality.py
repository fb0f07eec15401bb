"""Honest words about a bad model: warnings when its validation metrics say it learned ~nothing."""

from __future__ import annotations

import numpy as np

NEAR_ZERO_AP = 0.1
"""Validation average precision below which a detector is reported as finding almost nothing."""
OVER_MAJORITY = 0.02
"""A classifier must beat always predicting its most frequent class by this much accuracy."""

_ADVICE = (
    "try more epochs (--max-epochs), another learning rate (--learning-rate; the log says "
    "which one the range test chose and why), more labelled chips, and check that the labels "
    "lie on their objects in the imagery"
)


def quality_warnings(
    task: str,
    metrics: dict[str, float],
    confusion: np.ndarray | None,
    class_names: list[str],
) -> list[str]:
    """The warnings a model's validation results call for (none for a model that learned).

    Args:
        task: ``pixel``, ``detection``, ``instance`` or ``classification``.
        metrics: The validation metrics (``average_precision``, ``accuracy``...).
        confusion: The validation confusion matrix (truth rows) of pixel and single-label
            chip classifiers, else None.
        class_names: Names of the matrix rows (pixel tasks: NoData first).

    Returns:
        One sentence per problem: what is wrong and what to try.
    """
    if task in ("detection", "instance"):
        ap = float(metrics.get("average_precision", 0.0))
        if ap < NEAR_ZERO_AP:
            return [
                f"validation average precision is {ap:.3f}: the model finds almost none of "
                f"the objects; {_ADVICE}"
            ]
        return []
    accuracy = float(metrics.get("accuracy", 0.0))
    if confusion is None or confusion.sum() == 0:  # multi-label: accuracy is the F1 score
        if accuracy < NEAR_ZERO_AP:
            return [
                f"validation F1 score is {accuracy:.3f}: the model predicts almost no labels "
                f"right; {_ADVICE}"
            ]
        return []
    rows = confusion.sum(axis=1)
    majority = int(np.argmax(rows))
    share = float(rows[majority] / rows.sum())
    if accuracy < share + OVER_MAJORITY:
        what = "pixel accuracy" if task == "pixel" else "accuracy"
        name = class_names[majority] if majority < len(class_names) else str(majority)
        where = "everywhere" if task == "pixel" else "for every chip"
        return [
            f"validation {what} is {accuracy:.3f}, no better than predicting {name} {where} "
            f"({share:.3f}); {_ADVICE}"
        ]
    return []
