"""The ``rasterlearn`` command line, run as a user runs it: a subprocess of the installed script."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rasterlearn.tools.export_training_data import export_training_data

SCRIPT = Path(sys.executable).with_name("rasterlearn")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "rasterlearn.cli"]

# API parameters whose CLI option is not simply --kebab-case, and those that are not options.
RENAMED = {"in_class_data": "--class-data", "in_mask_polygons": "--mask-polygons"}
ARGUMENTS = ("in_raster", "out_folder")
API_ONLY = ("progress",)


def rasterlearn(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("CI", None)
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def option_name(parameter: str) -> str:
    return RENAMED.get(parameter, "--" + parameter.replace("_", "-"))


def option_rows(help_text: str) -> dict[str, str]:
    """The text of each option's row in Typer's help panels, wrapped lines joined."""
    rows: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("╭", "╰")):
            current = None
            continue
        body = stripped.strip("│").strip()
        match = re.match(r"(--[a-z0-9][a-z0-9-]*)", body)
        if match:
            current = match.group(1)
            rows[current] = body
        elif current is not None and body:
            rows[current] += " " + body
    return {name: " ".join(text.split()) for name, text in rows.items()}


def shown_default(row: str) -> str | None:
    match = re.search(r"\[default: ([^\]]+)\]", row)
    return match.group(1).strip() if match else None


def test_help_lists_the_commands():
    result = rasterlearn("--help")
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^│ ([a-z][a-z-]+) ", result.stdout, flags=re.MULTILINE)
    for command in ("export-training-data", "export-info", "demo"):
        assert command in listed, result.stdout


def test_export_help_documents_every_parameter_with_its_default():
    result = rasterlearn("export-training-data", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    arguments = [a.strip("{}[]<>.").lower() for a in usage.split("[OPTIONS]", 1)[1].split()]
    assert arguments == list(ARGUMENTS), usage

    rows = option_rows(text)
    parameters = inspect.signature(export_training_data).parameters
    documented = set()
    for name, parameter in parameters.items():
        if name in ARGUMENTS or name in API_ONLY:
            continue
        option = option_name(name)
        assert option in rows, f"{name}: {option} is not in the help"
        documented.add(option)
        row = rows[option]
        default = parameter.default
        # Every option explains itself: words besides its names, type and default.
        words = [
            w
            for w in re.sub(r"\[default: [^\]]*\]", "", row).split()
            if not w.startswith("--") and not set(w) & set("<>|")
        ]
        assert len(words) >= 2, f"{option} has no help: {row!r}"
        if default is None:
            continue
        shown = shown_default(row)
        assert shown is not None, f"{option}: no default shown in {row!r}"
        if isinstance(default, bool):
            # A switch shows the spelling that gives the default: --overwrite / --no-overwrite.
            assert (shown == option[2:]) is default, f"{option}: default {shown!r}"
        else:
            assert shown == str(default), f"{option}: default {shown!r}, API {default!r}"
    for expected in ("256", "128", "PASCAL_VOC_rectangles", "TIFF", "MAP_SPACE"):
        assert f"[default: {expected}]" in " ".join(text.split())
    # No option of the command lacks its API parameter (help and negative switches aside).
    negatives = {"--only-tiles-with-features", "--help"}
    negatives |= {o.replace("--", "--no-", 1) for o in documented}
    assert set(rows) - documented - negatives == set()


EXPORT_OPTIONS = {
    "tile_size_x": 160,
    "tile_size_y": 128,
    "stride_x": 120,
    "stride_y": 100,
    "metadata_format": "PASCAL_VOC_rectangles",
    "image_chip_format": "TIFF",
    "min_polygon_overlap_ratio": 0.25,
    "output_nofeature_tiles": True,
    "num_workers": 2,
}


def cli_options(options: dict) -> list[str]:
    args: list[str] = []
    for name, value in options.items():
        if value is True:
            args.append(option_name(name))
        else:
            args += [option_name(name), str(value)]
    return args


@pytest.fixture(scope="module")
def neon_exports(neon, tmp_path_factory):
    """The NEON sample exported once with the API and once with the CLI, same parameters."""
    raster, trees = neon
    root = tmp_path_factory.mktemp("neon_cli")
    api = export_training_data(raster, root / "api", trees, progress=False, **EXPORT_OPTIONS)
    cli = rasterlearn(
        "export-training-data",
        raster,
        root / "cli",
        "--class-data",
        trees,
        *cli_options(EXPORT_OPTIONS),
    )
    return api, cli, root / "cli"


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_cli_export_writes_the_same_files_as_the_api(neon_exports):
    api, cli, cli_folder = neon_exports
    assert cli.returncode == 0, cli.stderr
    assert cli.stderr == ""
    assert f"Wrote {api.num_chips} PASCAL_VOC_rectangles chips" in cli.stdout
    ours, theirs = files_under(api.out_folder), files_under(cli_folder)
    assert sorted(theirs) == sorted(ours)
    chips = [name for name in ours if name.startswith("images/")]
    labels = [name for name in ours if name.startswith("labels/")]
    assert len(chips) == len(labels) == api.num_chips > 0
    differing = [name for name in ours if ours[name] != theirs[name]]
    assert differing == []


def test_export_info_prints_format_and_class_counts(neon_exports):
    api, _, cli_folder = neon_exports
    # Count the objects independently, straight from the VOC files.
    objects = sum(
        len(ET.parse(p).getroot().findall("object")) for p in (cli_folder / "labels").glob("*.xml")
    )
    assert objects == api.num_features > 0

    result = rasterlearn("export-info", cli_folder)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "PASCAL_VOC_rectangles" in lines[0]
    assert f"{api.num_chips} chips" in lines[0]
    assert "3 x 128 x 160" in lines[0]
    assert re.search(rf"class 1 Tree: {api.num_chips} chips, {objects} objects", result.stdout), (
        result.stdout
    )


def test_export_info_refuses_a_folder_that_is_no_export(tmp_path):
    (tmp_path / "labels").mkdir()
    result = rasterlearn("export-info", tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "images" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def neon_pixels(tmp_path_factory, neon):
    """The NEON sample exported as Classified_Tiles through the CLI."""
    out = tmp_path_factory.mktemp("neon") / "trees_pixels"
    raster, trees = neon
    result = rasterlearn(
        "export-training-data",
        raster,
        out,
        "--class-data",
        trees,
        "--metadata-format",
        "Classified_Tiles",
        "--tile-size-x",
        "128",
        "--tile-size-y",
        "128",
        "--stride-x",
        "128",
        "--stride-y",
        "128",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no rasterio warning about the label rasters' georeference
    return out


def test_export_info_counts_classes_of_pixel_exports(neon_pixels):
    """Every chip of a Classified_Tiles export of the trees holds trees: the count is not 0."""
    info = rasterlearn("export-info", neon_pixels)
    assert info.returncode == 0, info.stderr
    assert "Classified_Tiles" in info.stdout
    count = re.search(r"class 1 Tree: (\d+)", info.stdout)
    assert count is not None, info.stdout
    assert int(count.group(1)) > 0, info.stdout
