"""Geospatial primitives: rasters, vectors and window grids. No deep learning here."""
