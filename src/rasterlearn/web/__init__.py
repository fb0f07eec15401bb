"""The web app's pages and static files (vendored OpenLayers, page scripts), served by
``rasterlearn serve``. The pages use only the service's public REST API (see docs/web.md)."""
