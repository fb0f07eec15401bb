"""The service's fixtures (see serve_helpers.py)."""

from serve_helpers import serve_data, server, web_client, web_data

__all__ = ["serve_data", "server", "web_client", "web_data"]
