// A map in a raster's own coordinates (its CRS, or pixels for a raster without a
// georeference): no reprojection. The imagery comes as PNG tiles from /imagery/tiles.
/* global ol */

import { authHeaders, getJSON, withQuery } from "./api.js";

/** The display metadata of a raster (/imagery/info). */
export async function rasterInfo(raster) {
  return getJSON(withQuery("/imagery/info", { raster }));
}

/** An OpenLayers projection for the raster's coordinates (no transforms to anything else). */
export function rasterProjection(info) {
  const projection = new ol.proj.Projection({
    code: `rasterlearn:${info.name}`,
    units: info.crs.units,
    extent: info.extent,
  });
  ol.proj.addProjection(projection);
  return projection;
}

function loadTile(tile, src) {
  // fetch (with the API key) instead of <img src>, so that keyed services work
  fetch(src, { headers: authHeaders() })
    .then((response) => (response.ok ? response.blob() : Promise.reject(response.status)))
    .then((blob) => {
      const image = tile.getImage();
      const url = URL.createObjectURL(blob);
      image.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
      image.src = url;
    })
    .catch(() => tile.setState(3)); // TileState.ERROR: shown as missing, no console error
}

/**
 * The imagery layer: tiles of the raster in its own grid.
 * @param {object} info from rasterInfo
 * @param {{bands?: number[], stretch?: string}} display band combination (1 or 3 bands) and stretch
 */
export function imageryLayer(info, projection, display = {}) {
  const grid = new ol.tilegrid.TileGrid({
    extent: info.extent,
    origin: [info.extent[0], info.extent[3]],
    resolutions: info.resolutions,
    tileSize: info.tile_size,
  });
  const source = new ol.source.TileImage({
    projection,
    tileGrid: grid,
    interpolate: false, // pixels stay pixels when zoomed in: what is labelled is what is there
    transition: 0,
    tileLoadFunction: loadTile,
  });
  const layer = new ol.layer.Tile({ source, properties: { name: "imagery" } });
  layer.setDisplay = (next) => {
    const bands = (next.bands || info.default_bands).join(",");
    const stretch = next.stretch || info.default_stretch;
    source.setTileUrlFunction(([z, x, y]) =>
      withQuery(`/imagery/tiles/${z}/${x}/${y}.png`, { raster: info.name, bands, stretch }),
    );
    source.refresh();
  };
  layer.setDisplay(display);
  return layer;
}

/**
 * A map of the raster: imagery, controls, view fitted to the raster.
 * @returns {{map: ol.Map, view: ol.View, projection: ol.proj.Projection, imagery: ol.layer.Tile}}
 */
export function rasterMap(target, info) {
  const projection = rasterProjection(info);
  const imagery = imageryLayer(info, projection);
  const finest = info.resolutions[info.resolutions.length - 1];
  const view = new ol.View({
    projection,
    maxResolution: info.resolutions[0] * 2,
    minResolution: finest / 32,
    extent: info.extent,
    constrainOnlyCenter: true,
  });
  const controls = [
    new ol.control.Zoom(),
    new ol.control.MousePosition({
      coordinateFormat: ol.coordinate.createStringXY(info.crs.units === "degrees" ? 6 : 2),
      projection,
      className: "mouse-position",
    }),
  ];
  if (info.crs.units !== "pixels") controls.push(new ol.control.ScaleLine());
  const map = new ol.Map({ target, layers: [imagery], view, controls });
  view.fit(info.extent, { padding: [10, 10, 10, 10] });
  return { map, view, projection, imagery };
}

/**
 * Geometries between the raster's coordinates (what the service stores) and the map's: the
 * same, except pixel space, where map y is row negated so that the first row is at the top.
 */
export function toMap(info, geometry) {
  if (info.flip_y) geometry.scale(1, -1, [0, 0]);
  return geometry;
}

export function fromMap(info, geometry) {
  const copy = geometry.clone();
  if (info.flip_y) copy.scale(1, -1, [0, 0]);
  return copy;
}

/** A band combination and stretch picker for the imagery layer, in `container`. */
export function displayControls(container, info, imagery) {
  const bandOptions = info.bands
    .map((b) => `<option value="${b.index}">${b.index}: ${b.name}</option>`)
    .join("");
  const channels = info.default_bands.length === 3 ? ["R", "G", "B"] : ["Grey"];
  container.innerHTML =
    channels
      .map((c) => `<label>${c} <select data-channel="${c}">${bandOptions}</select></label>`)
      .join(" ") +
    ` <label>Stretch <select data-stretch>${info.stretches
      .map((s) => `<option>${s}</option>`)
      .join("")}</select></label>`;
  const selects = [...container.querySelectorAll("select[data-channel]")];
  selects.forEach((select, i) => (select.value = String(info.default_bands[i])));
  const stretch = container.querySelector("select[data-stretch]");
  stretch.value = info.default_stretch;
  const apply = () =>
    imagery.setDisplay({
      bands: selects.map((s) => Number(s.value)),
      stretch: stretch.value,
    });
  container.addEventListener("change", apply);
}
