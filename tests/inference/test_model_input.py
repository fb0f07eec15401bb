"""The cell size a raster is processed at, from the model's .emd range and the raster's own."""

from __future__ import annotations

import warnings

import pytest
from affine import Affine
from rasterio.crs import CRS

from rasterlearn.formats.emd import ModelDefinition
from rasterlearn.geo.grid import Grid
from rasterlearn.inference.model_input import CellSizeRange, model_band_names, processing_cell_size


def emd(low: float | None, high: float | None, wkid: int = 32617) -> ModelDefinition:
    def cell(size: float | None) -> dict | None:
        if size is None:
            return None
        return {"x": size, "y": size, "spatialReference": {"wkid": wkid, "latestWkid": wkid}}

    return ModelDefinition.load(
        {"ModelType": "ObjectDetection", "MinCellSize": cell(low), "MaxCellSize": cell(high)}
    )


def grid(cell: float, crs: str | None = "EPSG:32617") -> Grid:
    return Grid(
        Affine(cell, 0, 400000, 0, -cell, 3300000),
        100,
        100,
        CRS.from_user_input(crs) if crs else None,
    )


def quiet(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return processing_cell_size(*args)


def test_the_range_of_an_emd():
    assert CellSizeRange.of(emd(0.1, 0.3)) == CellSizeRange(0.1, 0.3, CRS.from_epsg(32617))
    assert CellSizeRange.of(emd(None, 0.2)).low == 0.2  # one end gives both
    assert CellSizeRange.of(emd(None, None)) is None
    # feet (EPSG:2236, US survey feet) against metres
    low, high = CellSizeRange.of(emd(0.3048006096, 0.3048006096)).in_units_of(CRS.from_epsg(2236))
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)
    assert str(CellSizeRange(0.1, 0.1)) == "0.1" and str(CellSizeRange(0.1, 0.3)) == "0.1-0.3"


def test_inside_the_range_the_raster_keeps_its_cell_size_outside_it_takes_the_nearest_end():
    model = CellSizeRange.of(emd(0.1, 0.3))
    assert quiet(grid(0.2), model, None, "r") is None
    assert quiet(grid(0.302), model, None, "r") is None  # within 1 %
    assert quiet(grid(0.15), CellSizeRange.of(emd(0.1, 0.1)), None, "r") == 0.1
    assert quiet(grid(0.4), model, None, "r") == 0.3
    assert quiet(grid(0.06), model, None, "r") == 0.1
    assert quiet(grid(0.5), None, None, "r") is None  # a model without a range
    assert quiet(grid(0.5, None), model, None, "r") is None  # pixel space


def test_a_cell_size_given_wins_and_far_ones_warn():
    model = CellSizeRange.of(emd(0.1, 0.1))
    assert quiet(grid(0.15), model, 0.12, "r") == 0.12
    assert quiet(grid(0.15), model, 0.15, "r") is None  # its own: nothing to resample
    with pytest.warns(UserWarning, match="processing r at cell size 0.5 m, far from the 0.1"):
        assert processing_cell_size(grid(0.15), model, 0.5, "r") == 0.5
    with pytest.warns(UserWarning, match="far coarser than the 0.1 .* detail finer than 1 m"):
        assert processing_cell_size(grid(1.0), model, None, "r") == 0.1
    with pytest.warns(UserWarning, match="far finer"):
        assert processing_cell_size(grid(0.03), model, None, "r") == 0.1


def test_the_band_names_of_a_model():
    names = {"InputRastersProps": {"BandNames": ["red", "green", "blue", "nir"]}}
    assert model_band_names(ModelDefinition.load({"ModelType": "x", **names})) == [
        "red",
        "green",
        "blue",
        "nir",
    ]
    assert model_band_names(ModelDefinition.load({"ExtractBands": ["B04", "B03"]})) == [
        "B04",
        "B03",
    ]
    assert model_band_names(ModelDefinition.load({"ExtractBands": [0, 1, 2]})) is None
