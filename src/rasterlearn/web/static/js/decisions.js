// Review decisions on the service (/review/features): the results are loaded with the file's
// revision and decisions are saved with If-Match, so a save based on an old revision is refused
// (409) instead of losing someone else's decisions.
/* global ol */

import { ApiError, request, withQuery } from "./api.js";
import { toMap } from "./map.js";

export const STATUS = "Status";
export const REVIEWED = "ReviewedClass";
export const ACCEPTED = "accepted";
export const REJECTED = "rejected";
const SAVE_DELAY_MS = 300;

export class DecisionStore {
  /**
   * @param {object} info the raster's /imagery/info
   * @param {string} path the results GeoPackage (data path)
   * @param {{onState: Function, onConflict: Function}} hooks called with "saving", "saved",
   *   "unsaved" or "error" (and a message); called with the 409's message
   */
  constructor(info, path, hooks) {
    this.info = info;
    this.path = path;
    this.hooks = hooks;
    this.revision = null;
    this.pending = new Map();
    this.timer = null;
    this.saving = Promise.resolve();
    this.conflict = false;
  }

  /** The results: fields, classes, and the features in map coordinates (id: the FID). */
  async load() {
    const { data } = await request(withQuery("/review/features", { path: this.path }));
    this.revision = data.revision;
    const features = new ol.format.GeoJSON().readFeatures(data.features);
    features.forEach((f) => toMap(this.info, f.getGeometry()));
    return { ...data, features };
  }

  /** Keep a decision (status null clears it); saved soon, decisions in a burst at once. */
  decide(fid, status, reviewedClass) {
    this.pending.set(fid, { fid, [STATUS]: status, [REVIEWED]: reviewedClass });
    this.hooks.onState("unsaved");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush().catch(() => {}), SAVE_DELAY_MS);
  }

  /** Save what is pending now; resolves when saved (rejects on a conflict or error). */
  async flush() {
    clearTimeout(this.timer);
    await this.saving.catch(() => {});
    if (!this.pending.size || this.conflict) return this.saving;
    const decisions = [...this.pending.values()];
    this.pending.clear();
    this.saving = this.patch(decisions);
    return this.saving;
  }

  async patch(decisions) {
    this.hooks.onState("saving");
    try {
      const { data } = await request(withQuery("/review/features", { path: this.path }), {
        method: "PATCH",
        body: { decisions },
        headers: { "If-Match": `"${this.revision}"` },
      });
      this.revision = data.revision;
      this.hooks.onState(this.pending.size ? "unsaved" : "saved", `${data.count} decisions saved`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        this.conflict = true;
        this.hooks.onConflict(err.message);
      } else {
        for (const d of decisions) if (!this.pending.has(d.fid)) this.pending.set(d.fid, d);
        this.hooks.onState("error", err.message);
      }
      throw err;
    }
  }
}
