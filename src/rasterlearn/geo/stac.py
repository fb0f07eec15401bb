"""STAC input: an item, an item collection, or a static catalog or collection, as rasters.

pystac parses the JSON; the bands wanted are chosen among the raster assets by name (the
band's ``common_name``, its ``name``, or the key of a one-band asset, from ``eo:bands`` or
STAC 1.1 ``bands``); a VRT stacks them (:mod:`rasterlearn.geo.vrt`), so GDAL reads each asset
window by window (a remote one through ``/vsicurl/`` byte ranges) and nothing is downloaded
whole. A catalog's items are mosaicked into one VRT, or opened one by one.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rasterlearn.errors import InputError
from rasterlearn.geo.paths import gdal_path
from rasterlearn.geo.vrt import RasterFacts, VrtBand, raster_facts, vrt_xml

if TYPE_CHECKING:  # pystac takes 0.1 s to import: only a STAC input needs it
    import pystac

RASTER_MEDIA = ("tiff", "jp2", "geotiff")
RASTER_ASSET_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
NOT_DATA_ROLES = {"thumbnail", "overview", "metadata"}
RGB = ("red", "green", "blue")
_GENERIC_NAME = re.compile(r"^(band)?[\s_]*\d*$", re.IGNORECASE)


def is_stac_input(href: str) -> bool:
    """Whether an input names a STAC JSON file (a local ``.json`` path or a ``.json`` URL)."""
    path = urllib.parse.urlparse(href).path if "://" in href else href
    return path.lower().endswith(".json")


@dataclass(frozen=True)
class AssetBand:
    """One band of a raster asset of an item.

    Attributes:
        href: The asset's GDAL path.
        band: The band's number in the asset file (1-based).
        label: The name shown for it (the band's name, or the asset key).
        names: Lower-case names it answers to: common name, band name, and the asset key
            for a one-band asset.
        common_name: Its ``common_name`` (``red``, ``nir``...), or "".
    """

    href: str
    band: int
    label: str
    names: frozenset[str]
    common_name: str = ""


def stac_rasters(
    href: str, wanted: Sequence[str] | None, separately: bool = False
) -> list[tuple[str, str]]:
    """The rasters of a STAC item, item collection, catalog or collection, as VRTs.

    Args:
        href: Path or URL of the STAC JSON.
        wanted: Band names to stack, in order; None chooses (the one raster asset's bands, or
            red, green and blue).
        separately: For several items, one raster per item instead of one mosaic.

    Returns:
        ``(vrt_xml, name)`` per raster.

    Raises:
        InputError: for unreadable JSON, no items, or an item without the bands wanted.
    """
    items = _items(href)
    if not items:
        raise InputError(f"STAC file {href} holds no items", "give an item, catalog or collection")
    facts: dict[str, RasterFacts] = {}
    chosen = [_vrt_bands(item, base, wanted, facts) for item, base in items]
    if separately or len(chosen) == 1:
        names = [href] if len(chosen) == 1 else [item.id for item, _ in items]
        return [(vrt_xml(b, _finest(b)), n) for b, n in zip(chosen, names, strict=True)]
    return [(_mosaic(chosen, [item.id for item, _ in items]), f"mosaic of {href}")]


def stac_local_files(href: str) -> list[Path]:
    """The local files a STAC JSON reads: its items' JSON and their assets (not URLs).

    Raises:
        InputError: for unreadable or invalid STAC.
    """
    files: list[Path] = []
    for item, base in _items(href):
        if "://" not in base:
            files.append(Path(base))
        for asset in item.assets.values():
            path = _absolute(asset.href, base)
            if "://" not in path:
                files.append(Path(path))
    return files


def _items(href: str) -> list[tuple[pystac.Item, str]]:
    """The items, each with the href its relative asset paths are relative to."""
    import pystac

    try:
        data = json.loads(pystac.StacIO.default().read_text(href))
    except (OSError, urllib.error.URLError, ValueError) as err:
        reason = " ".join(str(err).split())
        raise InputError(
            f"cannot read STAC file {href}: {reason}", "check the path or URL of the STAC JSON"
        ) from None
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "FeatureCollection":
            collection = pystac.ItemCollection.from_dict(data)
            return [(item, item.get_self_href() or href) for item in collection]
        stac = pystac.read_dict(data, href=href)
        if isinstance(stac, pystac.Item):
            return [(stac, href)]
        if isinstance(stac, pystac.Catalog):  # collections are catalogs too
            return [(item, item.get_self_href() or href) for item in stac.get_items(recursive=True)]
    except (pystac.STACError, pystac.STACTypeError, KeyError, TypeError, OSError) as err:
        raise InputError(
            f"STAC file {href} is not valid STAC: {err}", "check it with stac-validator"
        ) from None
    raise InputError(
        f"{href} is not a STAC item, item collection, catalog or collection",
        "give the JSON of a STAC item or a static catalog",
    )


def asset_bands(item: pystac.Item, base: str, count_of: Callable[[str], int]) -> list[AssetBand]:
    """Every band of the item's raster assets, in asset order.

    Args:
        item: The item.
        base: What its relative asset paths are relative to.
        count_of: The band count of an asset file without band metadata (read from its
            header).
    """
    out = []
    for key, asset in item.assets.items():
        if not _is_raster(asset):
            continue
        href = gdal_path(_absolute(asset.href, base))
        fields = asset.extra_fields
        meta = fields.get("eo:bands") or fields.get("bands")
        if not isinstance(meta, list):
            raster_bands = fields.get("raster:bands")
            count = len(raster_bands) if isinstance(raster_bands, list) else count_of(href)
            meta = [{}] * count
        for number, band in enumerate(meta, start=1):
            band = band if isinstance(band, dict) else {}
            common = str(band.get("common_name") or band.get("eo:common_name") or "").lower()
            name = str(band.get("name") or "")
            names = {common, name.lower()} - {""}
            if len(meta) == 1:
                names.add(key.lower())
            label = name or (key if len(meta) == 1 else f"{key}:{number}")
            out.append(AssetBand(href, number, label, frozenset(names), common))
    return out


def _is_raster(asset: pystac.Asset) -> bool:
    roles = set(asset.roles or [])
    if roles & NOT_DATA_ROLES and "data" not in roles:
        return False
    media = (asset.media_type or "").lower()
    if media:
        return any(kind in media for kind in RASTER_MEDIA)
    path = urllib.parse.urlparse(asset.href).path if "://" in asset.href else asset.href
    return path.lower().endswith(RASTER_ASSET_SUFFIXES)


def _absolute(href: str, base: str) -> str:
    """An asset's href resolved as STAC does: against the item's URL for a remote item (so a
    remote item never names a local file), against its folder for a local one."""
    if href.startswith("file://"):
        href = urllib.parse.unquote(urllib.parse.urlparse(href).path)
    elif "://" in href:
        return href
    if "://" in base:
        return urllib.parse.urljoin(base, href)
    return str((Path(base).absolute().parent / href).resolve())


def choose_bands(item: pystac.Item, bands: list[AssetBand], wanted: Sequence[str] | None):
    """The bands to stack: the ones named in ``wanted``, or, without names, every band of the
    item's one raster asset, or its red, green and blue bands.

    Raises:
        InputError: when the item has no raster asset or lacks a band wanted.
    """
    if not bands:
        listed = ", ".join(f"{k} ({a.media_type or 'no type'})" for k, a in item.assets.items())
        raise InputError(
            f"STAC item {item.id} has no raster asset GDAL can read (assets: {listed or 'none'})",
            "give an item with GeoTIFF/COG or JPEG 2000 assets",
        )
    if wanted is None:
        if len({b.href for b in bands}) == 1:
            return bands
        wanted = RGB
        if not all(any(w in b.names for b in bands) for w in wanted):
            raise InputError(
                f"STAC item {item.id} has several raster assets and no red, green and blue "
                f"bands to choose by default (bands: {_labels(bands)})",
                "name the bands after the item: ITEM.json#bands=NAME,NAME,...",
            )
    chosen = []
    for name in wanted:
        match = next((b for b in bands if name.lower() in b.names), None)
        if match is None:
            raise InputError(
                f"STAC item {item.id} has no band {name!r} (bands: {_labels(bands)})",
                "name bands the item has: ITEM.json#bands=NAME,NAME,...",
            )
        chosen.append(match)
    return chosen


def _labels(bands: Iterable[AssetBand]) -> str:
    return ", ".join(
        b.label + (f" ({b.common_name})" if b.common_name and b.common_name != b.label else "")
        for b in bands
    )


def meaningful_names(names: Sequence[str] | None) -> list[str] | None:
    """Band names worth choosing assets by: None when absent or generic (``Band_1``)."""
    if not names or any(_GENERIC_NAME.match(str(n)) for n in names):
        return None
    return [str(n) for n in names]


def _vrt_bands(
    item: pystac.Item, base: str, wanted: Sequence[str] | None, facts: dict[str, RasterFacts]
) -> list[VrtBand]:
    def header(href: str) -> RasterFacts:
        if href not in facts:
            facts[href] = raster_facts(href, f"{href} (an asset of STAC item {item.id})")
        return facts[href]

    chosen = choose_bands(item, asset_bands(item, base, lambda h: header(h).count), wanted)
    out = []
    for band in chosen:
        raster = header(band.href)
        if band.band > raster.count:
            raise InputError(
                f"asset {band.label} of STAC item {item.id} lists more bands than its file has",
                "fix the item's eo:bands",
            )
        interp = band.common_name.capitalize() if band.common_name in RGB else ""
        out.append(VrtBand(((raster, band.band),), band.common_name or band.label, interp))
    crs = {b.sources[0][0].crs for b in out}
    if len(crs) > 1 or any(b.sources[0][0].rotated for b in out):
        raise InputError(
            f"the bands chosen from STAC item {item.id} are in different coordinate systems "
            "or rotated",
            "choose bands of one projection",
        )
    return out


def _finest(bands: list[VrtBand]) -> tuple[float, float]:
    """The smallest cell size among the bands' sources."""
    sizes = [raster.resolution for band in bands for raster, _ in band.sources]
    return (min(s[0] for s in sizes), min(s[1] for s in sizes))


def _mosaic(per_item: list[list[VrtBand]], ids: list[str]) -> str:
    first = per_item[0]
    crs = first[0].sources[0][0].crs
    for bands, item_id in zip(per_item[1:], ids[1:], strict=True):
        if len(bands) != len(first) or bands[0].sources[0][0].crs != crs:
            raise InputError(
                f"STAC item {item_id} differs from item {ids[0]} in band count or coordinate "
                "system, so they cannot be mosaicked",
                "use PROCESS_ITEMS_SEPARATELY, or a catalog of items of one sensor and projection",
            )
    merged = [
        VrtBand(
            tuple(src for bands in per_item for src in bands[k].sources),
            first[k].description,
            first[k].color_interp,
        )
        for k in range(len(first))
    ]
    return vrt_xml(merged, _finest(first))
