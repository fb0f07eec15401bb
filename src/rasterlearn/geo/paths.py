"""Where rasters live: GDAL paths of local files, URLs and object-store URLs."""

from __future__ import annotations

import contextlib
import os

import rasterio

# Object-store URL schemes and the GDAL virtual file systems that read them; http(s):// URLs
# are read by /vsicurl/. All of them read only the byte ranges needed (HTTP range requests).
BUCKET_SCHEMES = {"s3://": "/vsis3/", "gs://": "/vsigs/", "az://": "/vsiaz/"}
NETWORK_VSI = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/", "/vsioss/", "/vsiswift/")
# Defaults for network rasters, unless set in the environment: listing a remote "directory" to
# find side-car files costs requests (and often fails); a COG needs none.
NETWORK_GDAL_DEFAULTS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def is_network_path(spec: str) -> bool:
    """Whether GDAL reads ``spec`` over the network (a URL or a network /vsi path)."""
    return spec.startswith(("http://", "https://", *BUCKET_SCHEMES, *NETWORK_VSI))


def gdal_path(spec: str) -> str:
    """The GDAL path of a path or URL (``https://h/f.tif`` -> ``/vsicurl/https://h/f.tif``)."""
    if spec.startswith(("http://", "https://")):
        return "/vsicurl/" + spec
    for scheme, vsi in BUCKET_SCHEMES.items():
        if spec.startswith(scheme):
            return vsi + spec[len(scheme) :]
    return spec


def reads_network(spec: str) -> bool:
    """Whether opening ``spec`` (a GDAL path, or a VRT's XML text) reads over the network."""
    if spec.lstrip().startswith("<"):
        return any(vsi in spec for vsi in NETWORK_VSI)
    return spec.startswith(NETWORK_VSI)


def network_env(spec: str) -> contextlib.AbstractContextManager:
    """GDAL settings for reading ``spec`` over the network (:data:`NETWORK_GDAL_DEFAULTS`, unless
    the environment sets them), or nothing for a local raster."""
    if not reads_network(spec):
        return contextlib.nullcontext()
    options = {k: v for k, v in NETWORK_GDAL_DEFAULTS.items() if k not in os.environ}
    return rasterio.Env(**options) if options else contextlib.nullcontext()
