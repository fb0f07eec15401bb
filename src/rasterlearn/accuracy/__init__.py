"""Accuracy assessment parts: features and class rasters read for scoring, tables, reports."""
