// Training samples on the service (/samples): loaded with their revision, saved with If-Match
// so that a save based on an old revision is refused (409) instead of losing others' edits.
/* global ol */

import { ApiError, request, withQuery } from "./api.js";
import { fromMap, toMap } from "./map.js";

export const VALUE = "Classvalue";
export const NAME = "Classname";
const SAVE_DELAY_MS = 300;

export class SampleStore {
  /**
   * @param {object} info the raster's /imagery/info
   * @param {string} path the samples GeoPackage (data path)
   * @param {{onState: Function, onConflict: Function}} hooks called with "saving", "saved",
   *   "unsaved" or "error" (and a message); called with the 409's message
   */
  constructor(info, path, hooks) {
    this.info = info;
    this.path = path;
    this.hooks = hooks;
    this.revision = null;
    this.format = new ol.format.GeoJSON();
    this.timer = null;
    this.saving = Promise.resolve();
    this.pending = null;
    this.conflict = false;
  }

  /** The samples as OpenLayers features in map coordinates, and the class schema. */
  async load() {
    const { data } = await request(withQuery("/samples", { path: this.path }));
    this.revision = data.revision;
    const features = this.format.readFeatures(data.features);
    features.forEach((f) => toMap(this.info, f.getGeometry()));
    return { features, classes: data.classes };
  }

  /** Save soon (edits in a burst are saved once); `snapshot()` gives {classes, features}. */
  schedule(snapshot) {
    this.pending = snapshot;
    this.hooks.onState("unsaved");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush().catch(() => {}), SAVE_DELAY_MS);
  }

  /** Save what is pending now; resolves when saved (rejects on a conflict or error). */
  async flush() {
    clearTimeout(this.timer);
    await this.saving.catch(() => {});
    const snapshot = this.pending;
    if (!snapshot || this.conflict) return this.saving;
    this.pending = null;
    this.saving = this.put(snapshot());
    return this.saving;
  }

  async put({ classes, features }) {
    this.hooks.onState("saving");
    const body = {
      classes,
      features: features.map((f) => {
        const copy = new ol.Feature({ geometry: fromMap(this.info, f.getGeometry()) });
        copy.setProperties({ [VALUE]: f.get(VALUE), [NAME]: f.get(NAME) });
        return this.format.writeFeatureObject(copy);
      }),
    };
    try {
      const { data } = await request(
        withQuery("/samples", { path: this.path, raster: this.info.name }),
        { method: "PUT", body, headers: { "If-Match": `"${this.revision}"` } },
      );
      this.revision = data.revision;
      this.hooks.onState(this.pending ? "unsaved" : "saved", `${data.count} samples saved`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        this.conflict = true;
        this.hooks.onConflict(err.message);
      } else {
        this.hooks.onState("error", err.message);
      }
      throw err;
    }
  }
}
