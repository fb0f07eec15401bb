"""The on-disk contracts shared with ArcGIS: pure I/O, no torch."""
