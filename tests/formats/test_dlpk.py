"""Deep learning packages: flat and complete on create, safe on open, surgical on edit.

Packages to open are built by hand with ``zipfile`` (malicious ones included), so the reader is
not checked only against our own writer.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import pytest

from rasterlearn.errors import InputError, OutputError, ParameterError
from rasterlearn.formats.dlpk import (
    create_dlpk,
    dlpk_cache_root,
    edit_dlpk,
    inspect_dlpk,
    open_dlpk,
)
from rasterlearn.formats.model_source import load_model_definition

EMD = {  # arcgis.learn style, as the Pro Train tool saves it (PRF inside Pro)
    "Framework": "arcgis.learn.models._inferencing",
    "ModelConfiguration": "_unet",
    "ModelType": "ImageClassification",
    "InferenceFunction": "[Functions]System\\DeepLearning\\ArcGISLearn\\ArcGISImageClassifier.py",
    "ExtractBands": [0, 1, 2],
    "Classes": [{"Value": 1, "Name": "Water", "Color": [0, 112, 255]}],
    "ModelFormat": "NCHW",
    "ArcGISLearnVersion": "2.4.4",
    "ModelFile": "lakes.pth",
    "ImageHeight": 256,
    "ImageWidth": 256,
    "LearningRate": "1.0000e-04",
    "ModelName": "UnetClassifier",
    "accuracy": "9.1000e-01",
}

# The model folder: relative name -> content (folders end with /).
MODEL_FILES = {
    "lakes.emd": json.dumps(EMD, indent=4).encode(),
    "lakes.pth": os.urandom(50_000),
    "model_metrics.html": b"<html><body>accuracy 0.91</body></html>",
    "ModelCharacteristics/": None,
    "ModelCharacteristics/loss_graph.png": b"\x89PNG fake",
    "ModelCharacteristics/training_validation_loss.json": b'{"training_validation_loss": []}',
    ".gitattributes": b"*.pth filter=lfs\n",
}
# Left out of packages: temporary files and other packages.
LEFT_OUT = {
    ".lakes.dlpk.partial-0123abcd": b"half a zip",
    "__pycache__/ArcGISImageClassifier.cpython-311.pyc": b"\x00",
    "notes.txt~": b"backup",
    "old.dlpk": b"PK stale",
}


@pytest.fixture(autouse=True)
def _private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the .dlpk extraction cache (under the system temporary folder) inside the test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()


def make_folder(folder: Path, files: dict[str, bytes | None]) -> Path:
    for name, content in files.items():
        path = folder / name
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return folder


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "lakes", {**MODEL_FILES, **LEFT_OUT})


def hand_zip(path: Path, entries: dict[str, bytes], **infos: zipfile.ZipInfo) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for info in infos.values():
            zf.writestr(info, b"target")
    return path


GOOD_ENTRIES = {"m.emd": json.dumps(EMD).encode(), "lakes.pth": b"weights"}


# -- create ------------------------------------------------------------------------------------


def test_create_is_flat_and_complete(model_folder: Path) -> None:
    package = create_dlpk(model_folder)
    assert package == (model_folder / "lakes.dlpk").absolute()
    with zipfile.ZipFile(package) as zf:
        names = zf.namelist()
        assert set(names) == set(MODEL_FILES)
        assert not any(n.startswith(("lakes/", "/")) or "\\" in n for n in names)
        for name, content in MODEL_FILES.items():
            if content is not None:
                assert zf.read(name) == content, name
        # weights are stored (deflating float arrays gains a few percent), the rest deflated
        kinds = {i.filename: i.compress_type for i in zf.infolist() if i.file_size}
        assert kinds.pop("lakes.pth") == zipfile.ZIP_STORED
        assert set(kinds.values()) == {zipfile.ZIP_DEFLATED}
    # Packaging again (overwrite) leaves the package itself out.
    again = create_dlpk(model_folder, overwrite=True)
    with zipfile.ZipFile(again) as zf:
        assert set(zf.namelist()) == set(MODEL_FILES)
    top = {name.split("/")[0] for name in [*MODEL_FILES, *LEFT_OUT]}
    assert {p.name for p in model_folder.iterdir()} == top | {"lakes.dlpk"}  # no temporaries


def test_create_elsewhere_and_refuse_existing(model_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "lakes.dlpk"
    assert create_dlpk(model_folder, out) == out.absolute()
    with pytest.raises(OutputError, match="already exists"):
        create_dlpk(model_folder, out)
    with zipfile.ZipFile(out) as zf:
        assert set(zf.namelist()) == set(MODEL_FILES)


def test_create_refuses_a_name_that_does_not_match_the_emd(
    model_folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(ParameterError, match=r"other\.dlpk does not match .*lakes\.emd") as err:
        create_dlpk(model_folder, tmp_path / "other.dlpk")
    assert err.value.hint == "name the package lakes.dlpk"
    with pytest.raises(ParameterError, match=r"does not end in \.dlpk"):
        create_dlpk(model_folder, tmp_path / "lakes.zip")
    assert not (tmp_path / "other.dlpk").exists()


def test_create_needs_exactly_one_emd_at_the_top(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        create_dlpk(tmp_path / "missing")
    empty = make_folder(tmp_path / "empty", {"w.pth": b"x"})
    with pytest.raises(InputError, match=r"holds no \.emd file"):
        create_dlpk(empty)
    two = make_folder(tmp_path / "two", {**MODEL_FILES, "copy.emd": MODEL_FILES["lakes.emd"]})
    with pytest.raises(InputError, match=r"holds 2 \.emd files \(copy\.emd, lakes\.emd\)"):
        create_dlpk(two)
    nested = make_folder(tmp_path / "nested", {"sub/lakes.emd": MODEL_FILES["lakes.emd"]})
    with pytest.raises(InputError, match="in a subfolder"):
        create_dlpk(nested)


def test_create_needs_the_files_the_emd_names(tmp_path: Path) -> None:
    files = {k: v for k, v in MODEL_FILES.items() if k != "lakes.pth"}
    folder = make_folder(tmp_path / "lakes", files)
    with pytest.raises(InputError, match=r"names ModelFile 'lakes\.pth', which is not in"):
        create_dlpk(folder)
    emd = {**EMD, "ModelFile": "/abs/lakes.pth"}
    folder = make_folder(tmp_path / "abs", {**MODEL_FILES, "lakes.emd": json.dumps(emd).encode()})
    with pytest.raises(InputError, match="an absolute path"):
        create_dlpk(folder, tmp_path / "lakes.dlpk")
    bad = make_folder(tmp_path / "bad", {**MODEL_FILES, "lakes.emd": b'{"ImageHeight": "x"}'})
    with pytest.raises(InputError, match="esri emd key ImageHeight holds 'x'"):
        create_dlpk(bad, tmp_path / "lakes.dlpk")


# -- open --------------------------------------------------------------------------------------


def test_open_extracts_everything_and_returns_the_emd(model_folder: Path, tmp_path: Path) -> None:
    package = create_dlpk(model_folder)
    dest = tmp_path / "extracted"
    emd = open_dlpk(package, dest)
    assert emd == dest.absolute() / "lakes.emd"
    for name, content in MODEL_FILES.items():
        if content is not None:
            assert (dest / name).read_bytes() == content
    assert (dest / "ModelCharacteristics").is_dir()
    with pytest.raises(OutputError, match="already exists"):
        open_dlpk(package, dest)
    # The default destination is a cache folder, reused while the package is unchanged.
    cached = open_dlpk(package)
    assert cached.read_bytes() == MODEL_FILES["lakes.emd"]
    assert dlpk_cache_root() in cached.parents
    assert open_dlpk(package) == cached
    md = load_model_definition(package)
    assert md.path == cached and md.resolve() == cached.parent / "lakes.pth"


def test_the_cache_drops_copies_of_deleted_or_changed_packages(
    model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RASTERLEARN_DLPK_CACHE", str(tmp_path / "cache"))
    kept = _package_in(model_folder, tmp_path / "kept")
    deleted = _package_in(model_folder, tmp_path / "deleted")
    changed = _package_in(model_folder, tmp_path / "changed")
    copies = {p.parent.name: open_dlpk(p).parent for p in (kept, deleted, changed)}
    deleted.unlink()
    os.utime(changed, ns=(0, 0))
    # a copy made or used within the last minute may be in use by another process
    assert {p.parent for p in copies.values()} == {tmp_path / "cache"}
    for key_file in (tmp_path / "cache").glob("*.key"):
        os.utime(key_file, (1, 1))
    newer = open_dlpk(_package_in(model_folder, tmp_path / "newer")).parent
    left = {p for p in (tmp_path / "cache").iterdir() if p.suffix != ".key"}
    assert left == {copies["kept"], newer}
    assert open_dlpk(changed).parent != copies["changed"]


def _package_in(model_folder: Path, folder: Path) -> Path:
    folder.mkdir()
    return create_dlpk(model_folder, folder / "lakes.dlpk")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("/etc/evil.txt", "an absolute path"),
        ("../evil.txt", r"a parent-folder \(\.\.\) path"),
        ("sub/../../evil.txt", r"a parent-folder \(\.\.\) path"),
        ("..\\evil.txt", r"a parent-folder \(\.\.\) path"),
        ("sub\\..\\..\\evil.txt", r"a parent-folder \(\.\.\) path"),
        ("\\evil.txt", "an absolute path"),
        ("\\\\server\\share\\evil.txt", "an absolute path"),
        ("C:/evil.txt", "a drive letter"),
        ("C:evil.txt", "a drive letter"),
        ("c:\\Windows\\evil.txt", "a drive letter"),
        ("data.txt:stream", "a colon"),
        ("evil\x01.txt", "control characters"),
    ],
)
def test_open_refuses_unsafe_names(tmp_path: Path, name: str, reason: str) -> None:
    package = tmp_path / "m.dlpk"
    with zipfile.ZipFile(package, "w") as zf:
        for entry, data in GOOD_ENTRIES.items():
            zf.writestr(entry, data)
        info = zipfile.ZipInfo("placeholder")
        info.filename = name  # zipfile would sanitise some names given to ZipInfo()
        zf.writestr(info, b"evil")
    with zipfile.ZipFile(package) as zf:
        assert name in zf.namelist()
    dest = tmp_path / "box" / "dest"
    with pytest.raises(InputError, match=f"unsafe entry .*{reason}"):
        open_dlpk(package, dest)
    with pytest.raises(InputError, match="unsafe entry"):
        inspect_dlpk(package)
    assert not dest.exists()
    assert not list(tmp_path.rglob("evil*"))


def test_open_reads_backslash_folders_of_windows_zips(tmp_path: Path) -> None:
    package = hand_zip(
        tmp_path / "m.dlpk", {**GOOD_ENTRIES, "ModelCharacteristics\\loss_graph.png": b"png"}
    )
    emd = open_dlpk(package, tmp_path / "dest")
    assert (emd.parent / "ModelCharacteristics" / "loss_graph.png").read_bytes() == b"png"
    names = [e.name for e in inspect_dlpk(package).entries]
    assert names == ["m.emd", "lakes.pth", "ModelCharacteristics/loss_graph.png"]


def test_open_refuses_symlinks(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("lakes.pth")
    link.create_system = 3
    link.external_attr = (0o120777 << 16) | 0x20
    package = hand_zip(tmp_path / "m.dlpk", {"m.emd": GOOD_ENTRIES["m.emd"]}, link=link)
    with pytest.raises(InputError, match=r"unsafe entry 'lakes\.pth' \(a symbolic link"):
        open_dlpk(package, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_open_refuses_duplicates_and_oversize(tmp_path: Path) -> None:
    package = tmp_path / "dup.dlpk"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(package, "w") as zf:
        zf.writestr("m.emd", GOOD_ENTRIES["m.emd"])
        zf.writestr("lakes.pth", b"one")
        zf.writestr("lakes.pth", b"two")
    with pytest.raises(InputError, match=r"holds the entry 'lakes\.pth' twice"):
        open_dlpk(package, tmp_path / "dest")
    big = hand_zip(tmp_path / "big.dlpk", {**GOOD_ENTRIES, "zeros.bin": bytes(1_000_000)})
    with pytest.raises(InputError, match="more than the limit of 100000 bytes"):
        open_dlpk(big, tmp_path / "dest", max_size=100_000)
    assert not (tmp_path / "dest").exists()
    assert open_dlpk(big, tmp_path / "dest", max_size=2_000_000).name == "m.emd"


def test_open_needs_exactly_one_emd(tmp_path: Path) -> None:
    two = hand_zip(
        tmp_path / "two.dlpk",
        {**GOOD_ENTRIES, "sub/other.emd": GOOD_ENTRIES["m.emd"]},
    )
    with pytest.raises(InputError, match=r"holds 2 \.emd files \(m\.emd, sub/other\.emd\)"):
        open_dlpk(two, tmp_path / "dest")
    with pytest.raises(InputError, match=r"holds 2 \.emd files"):
        load_model_definition(two)
    none = hand_zip(tmp_path / "none.dlpk", {"lakes.pth": b"w"})
    with pytest.raises(InputError, match=r"holds no \.emd, expected exactly one"):
        inspect_dlpk(none)


def test_open_refuses_corrupted_packages(model_folder: Path, tmp_path: Path) -> None:
    data = create_dlpk(model_folder).read_bytes()
    truncated = tmp_path / "truncated.dlpk"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"not a readable \.dlpk"):
        open_dlpk(truncated, tmp_path / "dest")
    with pytest.raises(InputError, match=r"not a readable \.dlpk"):
        load_model_definition(truncated)
    not_zip = tmp_path / "text.dlpk"
    not_zip.write_text("hello")
    with pytest.raises(InputError, match=r"not a readable \.dlpk"):
        inspect_dlpk(not_zip)
    # Damaged content with an intact directory: found while extracting (CRC or inflate error).
    with zipfile.ZipFile(model_folder / "lakes.dlpk") as zf:
        info = zf.getinfo("lakes.pth")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    damaged = bytearray(data)
    for i in range(start + 100, start + 200):
        damaged[i] ^= 0xFF
    bad = tmp_path / "damaged.dlpk"
    bad.write_bytes(bytes(damaged))
    with pytest.raises(InputError, match="is corrupted"):
        open_dlpk(bad, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    with pytest.raises(InputError, match="not found"):
        open_dlpk(tmp_path / "missing.dlpk")


# -- inspect -----------------------------------------------------------------------------------


def test_inspect_lists_entries_and_properties(model_folder: Path) -> None:
    package = create_dlpk(model_folder)
    info = inspect_dlpk(package)
    assert info.path == package and info.emd_name == "lakes.emd" and info.name_matches
    sizes = {e.name: e.size for e in info.entries}
    expected = {n: (len(c) if c is not None else 0) for n, c in MODEL_FILES.items()}
    assert sizes == expected
    assert info.size == sum(expected.values())
    with zipfile.ZipFile(package) as zf:
        assert [e.compressed_size for e in info.entries] == [i.compress_size for i in zf.infolist()]
    assert ordered(info.model_definition.to_dict()) == ordered(EMD)
    assert info.properties["ModelType"] == "ImageClassification"
    assert info.properties["ModelConfiguration"] == "_unet"
    assert info.properties["Description"] is None
    assert info.missing_files == []


def test_inspect_reports_missing_files_and_name_mismatch(tmp_path: Path) -> None:
    emd = {**EMD, "InferenceFunction": "MyPRF.py"}
    package = hand_zip(tmp_path / "m.dlpk", {"other.emd": json.dumps(emd).encode()})
    info = inspect_dlpk(package)
    assert not info.name_matches
    assert info.missing_files == ["lakes.pth", "MyPRF.py"]


# -- edit --------------------------------------------------------------------------------------


def test_edit_changes_only_the_emd(model_folder: Path) -> None:
    package = create_dlpk(model_folder)
    with zipfile.ZipFile(package) as zf:
        before = {i.filename: (i, zf.read(i)) for i in zf.infolist()}
        order = zf.namelist()
    info = edit_dlpk(
        package,
        framework="rasterlearn.prf",
        description="Lakes from NAIP",
        tags=["water", " lakes ", ""],
        summary=None,  # left unchanged
    )
    with zipfile.ZipFile(package) as zf:
        assert zf.namelist() == order
        for item in zf.infolist():
            old, data = before[item.filename]
            assert item.date_time == old.date_time and item.external_attr == old.external_attr
            assert item.compress_type == old.compress_type
            if item.filename != "lakes.emd":
                assert zf.read(item) == data, item.filename
        emd = json.loads(zf.read("lakes.emd"))
    expected = {**EMD, "Framework": "rasterlearn.prf"}
    expected |= {"Description": "Lakes from NAIP", "Tags": "water,lakes"}
    assert ordered(emd) == ordered(expected)
    assert info.properties["Tags"] == "water,lakes"
    top = {name.split("/")[0] for name in [*MODEL_FILES, *LEFT_OUT]}
    assert {p.name for p in model_folder.iterdir()} == top | {"lakes.dlpk"}  # no temporaries


def test_edit_model_configuration_and_tags_text(tmp_path: Path) -> None:
    package = hand_zip(tmp_path / "m.dlpk", GOOD_ENTRIES)
    edit_dlpk(
        package,
        ModelConfiguration='{"Name": "MyModel", "Config": {"k": 1}}',
        Tags="a, b ,c",
        Summary="s",
    )
    md = inspect_dlpk(package).model_definition
    assert md.model_configuration is not None
    assert md.model_configuration.to_dict() == {"Name": "MyModel", "Config": {"k": 1}}  # type: ignore[union-attr]
    assert md.tags == "a, b ,c" and md.summary == "s"
    edit_dlpk(package, model_configuration="_unet")
    assert inspect_dlpk(package).model_definition.model_configuration == "_unet"


def test_edit_refusals(tmp_path: Path) -> None:
    package = hand_zip(tmp_path / "m.dlpk", GOOD_ENTRIES)
    original = package.read_bytes()
    with pytest.raises(ParameterError, match="cannot edit 'ModelType'"):
        edit_dlpk(package, ModelType="x")
    with pytest.raises(ParameterError, match="nothing to edit"):
        edit_dlpk(package, framework=None)
    with pytest.raises(ParameterError, match="Framework cannot be empty"):
        edit_dlpk(package, framework="")
    with pytest.raises(ParameterError, match=r"ModelConfiguration .* is not valid JSON"):
        edit_dlpk(package, model_configuration="{oops")
    with pytest.raises(ParameterError, match="esri emd key Framework cannot be 5"):
        edit_dlpk(package, framework=5)
    assert package.read_bytes() == original
    with pytest.raises(InputError, match="not found"):
        edit_dlpk(tmp_path / "missing.dlpk", framework="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dlpk", "tmp"]


def ordered(value: object) -> object:
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value
