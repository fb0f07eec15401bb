"""Shared fixtures: generated scenes and the bundled NEON sample (real components, small data)."""

from __future__ import annotations

import os

# as the CLI does (rasterlearn.cli.main): idle OpenMP threads must not spin on 2 shared cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest

from rasterlearn.demo import sample_paths
from rasterlearn.synthetic import SyntheticScene, make_scene


@pytest.fixture(scope="session")
def neon() -> tuple[Path, Path]:
    """The NEON OSBS_029 tile (400 x 400 px RGB uint8, EPSG:32617, no nodata) and its trees."""
    return sample_paths()


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScene:
    """A 512 x 512 px 3-band uint8 scene with buildings, trees and water in EPSG:32617."""
    return make_scene(tmp_path_factory.mktemp("scene"), width=512, height=512, seed=1)


@pytest.fixture(scope="session")
def scene_multiband(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScene:
    """A 384 x 320 px 5-band uint16 scene with a nodata border."""
    return make_scene(
        tmp_path_factory.mktemp("scene5"),
        width=384,
        height=320,
        bands=5,
        dtype="uint16",
        seed=2,
        nodata=0,
        nodata_border=20,
    )
