"""The web pages' fixtures (see web_helpers.py)."""

from web_helpers import browser, label_files, label_server, tabs

__all__ = ["browser", "label_files", "label_server", "tabs"]
