"""Opening a model definition from an .emd, a model folder, JSON text or a .dlpk."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import pytest

from rasterlearn.errors import InputError
from rasterlearn.formats.model_source import load_model_definition

EMD = {
    "Framework": "PyTorch",
    "ModelType": "ObjectDetection",
    "ModelFile": "cars.pth",
    "ImageHeight": 256,
    "ImageWidth": 256,
    "ExtractBands": [0, 1, 2],
    "Classes": [{"Value": 1, "Name": "Car", "Color": [174, 20, 39]}],
}


@pytest.fixture(autouse=True)
def _private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the .dlpk extraction cache (under the system temporary folder) inside the test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()


def write_emd(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=4), encoding="utf-8")
    return path


def test_load_from_file_folder_json_text_and_dlpk(tmp_path: Path) -> None:
    folder = tmp_path / "UTMCars"
    folder.mkdir()
    emd = write_emd(folder / "UTMCars.emd", EMD)
    weights = folder / EMD["ModelFile"]
    weights.write_bytes(b"weights")
    package = tmp_path / "UTMCars.dlpk"
    with zipfile.ZipFile(package, "w") as zf:  # built by hand, not with create_dlpk
        zf.write(emd, "UTMCars.emd")
        zf.write(weights, weights.name)

    from_file = load_model_definition(emd)
    from_folder = load_model_definition(folder)
    from_text = load_model_definition(emd.read_text())
    from_mapping = load_model_definition(EMD)
    from_package = load_model_definition(package)
    for md in (from_file, from_folder, from_text, from_mapping, from_package):
        assert list(md.to_dict().items()) == list(EMD.items())
    assert from_file.path == emd.absolute() and from_folder.path == emd.absolute()
    assert from_file.base_folder == folder.absolute() and from_file.package is None
    assert from_text.path is None and from_text.base_folder is None
    assert from_package.package == package.absolute()
    assert from_package.path is not None and from_package.path.name == "UTMCars.emd"
    assert from_package.base_folder == from_package.path.parent
    model_file = from_package.resolve("ModelFile")
    assert model_file is not None and model_file.read_bytes() == b"weights"
    assert load_model_definition(EMD, base_folder=tmp_path).resolve() == (
        tmp_path.absolute() / "cars.pth"
    )


def test_folder_with_only_a_package(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "cars.dlpk", "w") as zf:
        zf.writestr("cars.emd", json.dumps(EMD))
    md = load_model_definition(tmp_path)
    assert md.package == (tmp_path / "cars.dlpk").absolute()


def test_folder_without_one_emd(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"holds no \.emd file"):
        load_model_definition(tmp_path)
    write_emd(tmp_path / "a.emd", EMD)
    write_emd(tmp_path / "b.emd", EMD)
    with pytest.raises(InputError, match=r"holds 2 \.emd files \(a\.emd, b\.emd\)"):
        load_model_definition(tmp_path)


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as err:
        load_model_definition(tmp_path / "nope.emd")
    assert err.value.hint == "give an .emd, a .dlpk, a model folder or the emd's JSON text"


def test_bad_json_in_a_package_names_the_package(tmp_path: Path) -> None:
    package = tmp_path / "broken.dlpk"
    with zipfile.ZipFile(package, "w") as zf:
        zf.writestr("broken.emd", '{"ModelType": }')
    with pytest.raises(InputError) as err:
        load_model_definition(package)
    assert err.value.message.startswith(f"{package} is not valid JSON")
