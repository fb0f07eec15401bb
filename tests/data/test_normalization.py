"""Normalisation statistics and the normaliser, checked against numpy computations written here
from the formulas of reference /work/shared/reference/arcgis-formats.md §7 and §4.6."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rasterlearn.data.merge import TrainingData
from rasterlearn.data.normalization import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NormalizationStats,
    Normalizer,
    usable_bands,
    uses_imagenet_stats,
)
from rasterlearn.formats.export_reader import read_export_folder
from rasterlearn.geo.stats import BandStats
from rasterlearn.synthetic import make_scene
from rasterlearn.tools.export_training_data import export_training_data

EIGHT_KEYS = {
    "band_min_values",
    "band_max_values",
    "band_mean_values",
    "band_std_values",
    "scaled_min_values",
    "scaled_max_values",
    "scaled_mean_values",
    "scaled_std_values",
}


def _export(scene_path: Path, labels: Path, out: Path, tile: int = 64) -> Path:
    export_training_data(
        scene_path,
        out,
        labels,
        tile_size_x=tile,
        tile_size_y=tile,
        stride_x=tile,
        stride_y=tile,
        metadata_format="PASCAL_VOC_rectangles",
        output_nofeature_tiles=True,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def multiband(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-band uint16 export with a nodata border (chips carry nodata pixels)."""
    root = tmp_path_factory.mktemp("norm5")
    scene = make_scene(
        root / "scene",
        width=192,
        height=160,
        bands=5,
        dtype="uint16",
        seed=7,
        nodata=0,
        nodata_border=12,
    )
    return _export(scene.raster_path, scene.polygons_path, root / "export")


@pytest.fixture(scope="module")
def neon_export(tmp_path_factory: pytest.TempPathFactory, neon: tuple[Path, Path]) -> Path:
    return _export(neon[0], neon[1], tmp_path_factory.mktemp("neon") / "export", tile=128)


def _chip_pixels(folder: Path) -> np.ndarray:
    """``(bands, n)`` valid pixels of every chip, read with rasterio."""
    parts = []
    for path in sorted((folder / "images").glob("*.tif")):
        with rasterio.open(path) as ds:
            data = ds.read().astype(np.float64)
            valid = ds.dataset_mask() > 0
        parts.append(data[:, valid])
    return np.concatenate(parts, axis=1)


def _reference_vectors(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The §7 formulas, written out."""
    lo, hi = pixels.min(1), pixels.max(1)
    mean, std = pixels.mean(1), pixels.std(1)
    hi = np.where(hi == lo, hi + 1, hi)
    scaled_mean = (mean - lo) / (hi - lo)
    scaled_std = std * scaled_mean / mean
    scaled_std[scaled_std == 0] = 0.01
    n = lo.size
    return {
        "band_min_values": lo,
        "band_max_values": hi,
        "band_mean_values": mean,
        "band_std_values": std,
        "scaled_min_values": np.zeros(n),
        "scaled_max_values": np.ones(n),
        "scaled_mean_values": scaled_mean,
        "scaled_std_values": scaled_std,
    }


def test_stats_match_formulas_on_chip_pixels(multiband: Path) -> None:
    folder = read_export_folder(multiband)
    expected = _reference_vectors(_chip_pixels(multiband))
    for stats in (
        NormalizationStats.from_training_data(folder),  # emd AllTilesStats
        NormalizationStats.from_band_stats(folder.band_stats),  # BandStatsState
    ):
        got = stats.to_emd()
        assert set(got) == EIGHT_KEYS
        for key, want in expected.items():
            np.testing.assert_allclose(got[key], want, rtol=1e-9, err_msg=key)


def test_degenerate_bands() -> None:
    # Band 0 constant (min == max, std 0), band 1 normal, band 2 mean 0 (quirk has no value).
    stats = NormalizationStats.from_vectors(
        [5.0, 0.0, -2.0], [5.0, 10.0, 2.0], [5.0, 4.0, 0.0], [0.0, 2.0, 1.0]
    )
    assert stats.band_max_values == (6.0, 10.0, 2.0)
    assert stats.scaled_mean_values == (0.0, 0.4, 0.5)
    assert stats.scaled_std_values[0] == 0.01
    assert stats.scaled_std_values[1] == pytest.approx(2.0 * 0.4 / 4.0)
    assert stats.scaled_std_values[2] == pytest.approx(1.0 / 4.0)  # std / (max - min)
    assert usable_bands(
        [BandStats(num=3, m1=5.0, min=5.0, max=5.0), BandStats(num=3, m1=1.0, min=0.0, max=2.0)]
    ) == [1]


def test_emd_round_trip() -> None:
    stats = NormalizationStats.from_vectors([0, 10], [100, 20], [40, 15], [5, 2])
    content = json.loads(json.dumps({"NormalizationStats": stats.to_emd()}))
    assert NormalizationStats.from_emd(content) == stats
    assert NormalizationStats.from_emd(content["NormalizationStats"]) == stats
    with pytest.raises(ValueError, match="scaled_std_values"):
        NormalizationStats.from_emd({k: [1.0] for k in EIGHT_KEYS - {"scaled_std_values"}})
    with pytest.raises(ValueError, match="band_max_values"):
        NormalizationStats.from_emd({**stats.to_emd(), "band_max_values": [1.0, None]})


def _reference_minmax(x: np.ndarray, stats: NormalizationStats, bands: list[int]) -> np.ndarray:
    lo = np.asarray(stats.band_min_values)[bands, None, None]
    hi = np.asarray(stats.band_max_values)[bands, None, None]
    mean = np.asarray(stats.scaled_mean_values)[bands, None, None]
    std = np.asarray(stats.scaled_std_values)[bands, None, None]
    return ((x[bands].astype(np.float64) - lo) / (hi - lo) - mean) / std


def test_minmax_normalize_numpy_and_torch(multiband: Path) -> None:
    data = TrainingData(multiband)
    assert not uses_imagenet_stats(data)
    norm = Normalizer.from_training_data(data)
    assert not norm.imagenet
    with rasterio.open(data.chips[0].image) as ds:
        pixels = ds.read()
        valid = ds.dataset_mask() > 0
    assert pixels.dtype == np.uint16 and not valid.all()
    stats = norm.stats
    for bands in (None, [3, 0], [4]):
        idx = bands or list(range(5))
        got = norm.normalize(pixels, bands)
        assert got.dtype == np.float32 and got.shape == (len(idx), *pixels.shape[1:])
        np.testing.assert_allclose(got, _reference_minmax(pixels, stats, idx), rtol=1e-5, atol=1e-5)
        as_torch = norm.normalize(torch.from_numpy(pixels.astype(np.int32)), bands)
        assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
        assert np.array_equal(as_torch.numpy(), got)
    # Masked pixels are zeroed before normalisation, for numpy and torch alike.
    masked = norm.normalize(pixels, mask=valid)
    zeroed = pixels.copy()
    zeroed[:, ~valid] = 0
    assert np.array_equal(masked, norm.normalize(zeroed))
    masked_t = norm.normalize(
        torch.from_numpy(pixels.astype(np.float32)), mask=torch.from_numpy(valid)
    )
    assert np.array_equal(masked_t.numpy(), masked)
    # A batch gives the same as one chip at a time; float32 input the same as uint16.
    batch = np.stack([pixels, pixels[:, ::-1, :]])
    np.testing.assert_array_equal(norm.normalize(batch)[0], norm.normalize(pixels))
    np.testing.assert_array_equal(norm.normalize(pixels.astype(np.float32)), norm.normalize(pixels))


def test_nodata_value_zeroes_only_all_band_nodata_pixels() -> None:
    stats = NormalizationStats.from_vectors([10, 10], [20, 20], [15, 15], [2, 2])
    x = np.array([[[7, 7, 3]], [[7, 1, 3]]], dtype=np.float32)  # (2 bands, 1 row, 3 cols)
    norm = Normalizer(stats, nodata=7)
    expected_input = np.array([[[0, 7, 3]], [[0, 1, 3]]], dtype=np.float32)
    np.testing.assert_array_equal(norm.normalize(x), Normalizer(stats).normalize(expected_input))
    np.testing.assert_array_equal(norm.normalize(torch.from_numpy(x)).numpy(), norm.normalize(x))
    nan_norm = Normalizer(stats, nodata=float("nan"))
    y = x.copy()
    y[:, 0, 1] = np.nan
    out = nan_norm.normalize(y)
    assert np.isfinite(out[:, 0, 1]).all()


def test_band_checks() -> None:
    norm = Normalizer(NormalizationStats.from_vectors([0, 0], [1, 1], [0.5, 0.5], [0.1, 0.1]))
    with pytest.raises(ValueError, match="2"):
        norm.normalize(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="extract_bands"):
        norm.normalize(np.zeros((2, 4, 4)), [2])
    with pytest.raises(ValueError, match="extract_bands"):
        Normalizer(norm.stats, extract_bands=[5])


def test_imagenet_for_8bit_rgb_neon(neon_export: Path) -> None:
    data = TrainingData(neon_export)
    assert data.dtype == "uint8" and data.band_count == 3
    assert uses_imagenet_stats(data)
    norm = Normalizer.from_training_data(data)
    assert norm.imagenet
    assert norm.to_emd() == {"ExtractBands": [0, 1, 2]}  # no NormalizationStats: ImageNet
    with rasterio.open(data.chips[0].image) as ds:
        pixels = ds.read()
    mean = np.asarray(IMAGENET_MEAN)[:, None, None]
    std = np.asarray(IMAGENET_STD)[:, None, None]
    expected = (pixels - 255 * mean) / (255 * std)  # reference §4.6
    got = norm.normalize(pixels)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(norm.normalize(torch.from_numpy(pixels)).numpy(), got)
    # The same normaliser is rebuilt from a model emd.
    again = Normalizer.from_emd(norm.to_emd())
    assert again.imagenet and np.array_equal(again.normalize(pixels), got)
    # Forcing min-max is possible; the stats then come from the export.
    forced = Normalizer.from_training_data(data, imagenet=False)
    assert not forced.imagenet and forced.stats.band_count == 3


def test_emd_rebuilds_minmax_normalizer(multiband: Path) -> None:
    norm = Normalizer.from_training_data(TrainingData(multiband), extract_bands=[0, 2, 4])
    emd = json.loads(json.dumps(norm.to_emd()))
    assert set(emd["NormalizationStats"]) == EIGHT_KEYS and emd["ExtractBands"] == [0, 2, 4]
    again = Normalizer.from_emd(emd)
    x = np.random.default_rng(0).integers(0, 9000, (5, 8, 8)).astype(np.uint16)
    assert again.normalize(x).shape == (3, 8, 8)
    assert np.array_equal(again.normalize(x), norm.normalize(x))


@pytest.mark.parametrize(
    ("bands", "dtype", "imagenet"),
    [(3, "uint8", True), (3, "uint16", False), (4, "uint8", False), (1, "uint8", False)],
)
def test_imagery_type_rules(tmp_path: Path, bands: int, dtype: str, imagenet: bool) -> None:
    scene = make_scene(tmp_path / "s", width=96, height=96, bands=bands, dtype=dtype, seed=3)
    out = _export(scene.raster_path, scene.polygons_path, tmp_path / "e")
    assert uses_imagenet_stats(TrainingData(out)) is imagenet


def test_recorded_range_above_255_means_multispectral(neon_export: Path) -> None:
    folder = read_export_folder(neon_export)
    stats = list(folder.band_stats)
    stats[1] = BandStats(num=stats[1].num, m1=stats[1].m1, m2=stats[1].m2, min=0, max=300)
    assert not uses_imagenet_stats(replace(folder, band_stats=tuple(stats)))
