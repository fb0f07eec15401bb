"""The ``rasterlearn`` command line, built from the tool declarations."""

from rasterlearn.cli.app import app, main

__all__ = ["app", "main"]
