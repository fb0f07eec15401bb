"""Cloud-native input: export and inference from a COG served over HTTP with range requests.

A real HTTP server (tests/conftest_http.py, its own process on loopback) serves a real COG;
GDAL reads it through /vsicurl/ (``https://`` URLs) or /vsis3/ (``s3://`` URLs, the server
standing in for an S3 endpoint, path-style). Outputs must be byte for byte those from the local
file, and GDAL must have fetched byte ranges, never the whole file in one response.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import rasterio
from typer.testing import CliRunner

from rasterlearn import classify_pixels, export_training_data, train_deep_learning_model
from rasterlearn.cli import app
from rasterlearn.errors import InputError
from rasterlearn.synthetic import SyntheticScene

pytest_plugins = ["conftest_http"]  # fixtures: cog, range_server, gdal_http_env, closed_port

TILES = {"tile_size_x": 128, "tile_size_y": 128, "stride_x": 96, "stride_y": 96}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under a folder, by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_fixture_serves_a_cog_by_ranges(cog: Path, range_server, gdal_http_env) -> None:
    """The test server answers ranges exactly (206, Content-Range), and the file is a COG."""
    import urllib.request

    shutil.copy(cog, range_server.root / "scene.tif")
    data = cog.read_bytes()
    request = urllib.request.Request(
        range_server.url("scene.tif"), headers={"Range": "bytes=10-99"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 10-99/{len(data)}"
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.read() == data[10:100]
    with rasterio.open(cog) as ds:
        assert ds.driver == "GTiff"
        assert ds.block_shapes[0] == (128, 128)  # conftest_http.COG_BLOCK
        assert ds.overviews(1), "a COG has overviews"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def assert_read_by_ranges(range_server, cog: Path, paths: set[str]) -> None:
    """Every read was a byte range answered with 206, none got the whole file at once, and
    only ``paths`` were asked for (no side-car or directory probing)."""
    requests = range_server.log()
    gets = [r for r in requests if r.method == "GET"]
    assert gets, "GDAL read nothing from the server"
    assert all(r.range is not None and r.status == 206 for r in gets), gets
    assert all(r.body_bytes < cog.stat().st_size for r in gets)
    assert {r.path for r in requests} == paths


def test_url_export_matches_local_file(
    scene: SyntheticScene, cog: Path, range_server, gdal_http_env, tmp_path: Path
) -> None:
    shutil.copy(cog, range_server.root / "scene.tif")
    local = export_training_data(cog, tmp_path / "local", scene.polygons_path, **TILES)
    remote = export_training_data(
        range_server.url("scene.tif"), tmp_path / "remote", scene.polygons_path, **TILES
    )
    assert remote.num_chips == local.num_chips > 0
    assert folder_bytes(tmp_path / "remote") == folder_bytes(tmp_path / "local")
    assert_read_by_ranges(range_server, cog, {"/scene.tif"})


@pytest.fixture
def s3_endpoint(range_server, gdal_http_env, monkeypatch: pytest.MonkeyPatch) -> str:
    """The range server as an S3 endpoint (unsigned, path-style, plain HTTP): bucket 'imagery'."""
    (range_server.root / "imagery").mkdir()
    monkeypatch.setenv("AWS_S3_ENDPOINT", range_server.base_url.removeprefix("http://"))
    monkeypatch.setenv("AWS_HTTPS", "NO")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTING", "FALSE")
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")  # no user profile gets in the way
    return "imagery"


def test_s3_url_export_matches_local_file(
    scene: SyntheticScene, cog: Path, range_server, s3_endpoint: str, tmp_path: Path
) -> None:
    shutil.copy(cog, range_server.root / s3_endpoint / "scene.tif")
    local = export_training_data(cog, tmp_path / "local", scene.polygons_path, **TILES)
    remote = export_training_data(
        f"s3://{s3_endpoint}/scene.tif", tmp_path / "remote", scene.polygons_path, **TILES
    )
    assert remote.num_chips == local.num_chips > 0
    assert folder_bytes(tmp_path / "remote") == folder_bytes(tmp_path / "local")
    assert_read_by_ranges(range_server, cog, {f"/{s3_endpoint}/scene.tif"})


@pytest.fixture(scope="module")
def unet(scene: SyntheticScene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A UNET trained for one epoch (its quality does not matter here)."""
    root = tmp_path_factory.mktemp("url-unet")
    export_training_data(
        scene.raster_path,
        root / "chips",
        scene.polygons_path,
        metadata_format="Classified_Tiles",
        tile_size_x=64,
        tile_size_y=64,
        stride_x=64,
        stride_y=64,
    )
    result = train_deep_learning_model(
        root / "chips",
        root / "unet",
        max_epochs=1,
        model_type="UNET",
        batch_size=16,
        backbone_model="resnet18",
        learning_rate=1e-3,
        seed=1,
    )
    return result.emd


def test_url_inference_matches_local_file_here_and_on_workers(
    cog: Path, unet: Path, range_server, s3_endpoint: str, tmp_path: Path
) -> None:
    """Classify Pixels from an https URL and an s3 URL, in this process and on a local cluster
    whose workers read their windows from the URL themselves: the local file's raster."""
    shutil.copy(cog, range_server.root / "scene.tif")
    shutil.copy(cog, range_server.root / s3_endpoint / "scene.tif")
    (want,) = classify_pixels(cog, tmp_path / "local.tif", unet)
    s3_url = f"s3://{s3_endpoint}/scene.tif"
    for name, url in (("https", range_server.url("scene.tif")), ("s3", s3_url)):
        (got,) = classify_pixels(url, tmp_path / f"{name}.tif", unet)
        assert got.read_bytes() == want.read_bytes(), name
    assert_read_by_ranges(range_server, cog, {"/scene.tif", f"/{s3_endpoint}/scene.tif"})
    range_server.clear()
    (got,) = classify_pixels(s3_url, tmp_path / "cluster.tif", unet, cluster="local:2")
    assert got.read_bytes() == want.read_bytes()
    # this process holds the file in GDAL's cache by now: what was fetched, workers fetched
    assert_read_by_ranges(range_server, cog, {f"/{s3_endpoint}/scene.tif"})


def test_small_extent_reads_part_of_the_file(
    scene: SyntheticScene, cog: Path, range_server, gdal_http_env, tmp_path: Path
) -> None:
    """Chips in one corner need only that corner's tiles: far fewer bytes than the file."""
    shutil.copy(cog, range_server.root / "corner.tif")  # a URL GDAL has not cached yet
    x0, y0 = scene.transform.c, scene.transform.f
    size = 128 * scene.transform.a  # 128 px
    result = export_training_data(
        range_server.url("corner.tif"),
        tmp_path / "corner",
        scene.polygons_path,
        extent=(x0, y0 - size, x0 + size, y0),
        tile_size_x=64,
        tile_size_y=64,
        stride_x=64,
        stride_y=64,
        output_nofeature_tiles=True,
    )
    assert result.num_chips == 4
    served = sum(r.body_bytes for r in range_server.log())
    assert 0 < served < cog.stat().st_size / 3


def test_missing_url_is_one_line_input_error(
    scene: SyntheticScene, range_server, gdal_http_env, tmp_path: Path
) -> None:
    url = range_server.url("missing.tif")
    with pytest.raises(InputError) as err:
        export_training_data(url, tmp_path / "out", scene.polygons_path, **TILES)
    message = str(err.value)
    assert "\n" not in message
    assert url in message and "404" in message
    assert err.value.hint and "curl" in err.value.hint
    assert any(r.path == "/missing.tif" and r.status == 404 for r in range_server.log())
    assert not (tmp_path / "out").exists()


def test_unreachable_url_is_one_line_input_error(
    scene: SyntheticScene, gdal_http_env, closed_port: int, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{closed_port}/scene.tif"
    with pytest.raises(InputError) as err:
        export_training_data(url, tmp_path / "out", scene.polygons_path, **TILES)
    assert "\n" not in str(err.value)
    assert url in str(err.value)


def test_cli_url_input(
    scene: SyntheticScene, cog: Path, range_server, gdal_http_env, tmp_path: Path
) -> None:
    shutil.copy(cog, range_server.root / "scene.tif")
    args = [
        "--class-data",
        str(scene.polygons_path),
        "--tile-size-x",
        "128",
        "--tile-size-y",
        "128",
    ]
    ok = CliRunner().invoke(
        app, ["export-training-data", range_server.url("scene.tif"), str(tmp_path / "a"), *args]
    )
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "a" / "map.txt").read_text()
    missing = CliRunner().invoke(
        app, ["export-training-data", range_server.url("nope.tif"), str(tmp_path / "b"), *args]
    )
    assert missing.exit_code == 2
    assert missing.output.count("\n") == 1 and "404" in missing.output


def test_url_defaults_need_no_gdal_settings(
    scene: SyntheticScene, cog: Path, range_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without any GDAL setting, a URL is opened without probing its "directory" for side-cars."""
    for name in ("GDAL_DISABLE_READDIR_ON_OPEN", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS"):
        monkeypatch.delenv(name, raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    shutil.copy(cog, range_server.root / "bare.tif")
    export_training_data(
        range_server.url("bare.tif"), tmp_path / "out", scene.polygons_path, **TILES
    )
    assert {r.path for r in range_server.log()} == {"/bare.tif"}
