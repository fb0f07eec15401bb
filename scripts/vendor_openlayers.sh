#!/usr/bin/env bash
# Re-vendor OpenLayers from the npm registry into the package data (no CDN: the web app works
# offline). Packs the pinned release, checks the tarball against the registry's integrity hash
# (dist.integrity, sha512), and copies dist/ol.js, ol.css and the licence.
#   scripts/vendor_openlayers.sh [VERSION]
set -euo pipefail

VERSION="${1:-10.11.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="$ROOT/src/rasterlearn/web/static/vendor/ol"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
EXPECTED="$(npm view "ol@$VERSION" dist.integrity)"
TARBALL="$(npm pack "ol@$VERSION" --silent | tail -n 1)"
ACTUAL="sha512-$(openssl dgst -sha512 -binary "$TARBALL" | base64 -w0)"
if [ -z "$EXPECTED" ] || [ "$ACTUAL" != "$EXPECTED" ]; then
    echo "error: ol@$VERSION tarball integrity $ACTUAL does not match the registry's $EXPECTED" >&2
    exit 1
fi
tar xzf "$TARBALL" package/dist/ol.js package/ol.css package/LICENSE.md
mkdir -p "$TARGET"
cp package/dist/ol.js package/ol.css "$TARGET/"
cp package/LICENSE.md "$TARGET/LICENSE.md"
printf 'ol@%s\nintegrity %s\n' "$VERSION" "$EXPECTED" > "$TARGET/VERSION"
echo "vendored ol@$VERSION into $TARGET (integrity checked)"
