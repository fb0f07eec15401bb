"""classify-objects on the execution layer: lanes and a Dask cluster give one process's output.

Uses the session's trained models (``models``); under ``pytest -n`` with ``--dist loadfile``
the worker running this file trains them too.
"""

from __future__ import annotations

import geopandas as gpd
import pytest
import torch

from rasterlearn.errors import ParameterError
from rasterlearn.tools.classify_objects import classify_objects


def test_lanes_and_a_cluster_give_one_lanes_output(models, tmp_path):
    """Same labels, same confidences bit for bit, same order: 1 lane, 2 lanes, local:2."""
    scene = models.scene
    args = {"batch_size": 2}  # several blocks of whole batches
    runs = {"one": {"num_workers": 1}, "two": {"num_workers": 2}, "cluster": {"cluster": "local:2"}}
    threads = torch.get_num_threads()
    frames = {}
    for name, how in runs.items():
        out = classify_objects(
            scene.raster_path,
            tmp_path / f"{name}.gpkg",
            models.classifier,
            in_features=scene.polygons_path,
            model_arguments=args,
            **how,
        )
        frames[name] = gpd.read_file(out)
    assert torch.get_num_threads() == threads  # lanes leave this process's setting alone
    one = frames["one"]
    assert len(one) == len(gpd.read_file(scene.polygons_path)) > 2 * args["batch_size"]
    assert one["Confidence"].between(0, 1).all()
    for name in ("two", "cluster"):
        other = frames[name]
        assert list(other.columns) == list(one.columns)
        assert one["ClassLabel"].equals(other["ClassLabel"]), name
        assert one["Confidence"].to_numpy().tobytes() == other["Confidence"].to_numpy().tobytes()
        assert one.geometry.geom_equals_exact(other.geometry, tolerance=0).all(), name


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ({"num_workers": 0}, "num_workers must be at least 1"),
        ({"cluster": "local:2", "scheduler": "tcp://127.0.0.1:8786"}, "not both"),
        ({"cluster": "remote"}, "unknown cluster"),
    ],
)
def test_bad_execution_parameters_give_one_line_and_no_output(models, tmp_path, how, message):
    out = tmp_path / "o.gpkg"
    with pytest.raises(ParameterError, match=message) as err:
        classify_objects(
            models.scene.raster_path,
            out,
            models.classifier,
            in_features=models.scene.polygons_path,
            **how,
        )
    assert "\n" not in str(err.value)
    assert not out.exists()
