// The review page (ArcGIS's attributes pane over the results): detected or classified objects
// over the imagery, styled by class and filtered by confidence; accept, reject or reclass each
// one (kept in the GeoPackage as Status, ReviewedClass, ReviewedAt); a classified raster as a
// layer with its colour table; accuracy against the accepted features.
//   /web/review?raster=files/scene.tif&features=files/detections.gpkg&classified=files/classes.tif
/* global ol */

import { getJSON, query, request, setStatus, withQuery } from "./api.js";
import { colourOf } from "./classes.js";
import { ACCEPTED, DecisionStore, REJECTED, REVIEWED, STATUS } from "./decisions.js";
import { displayControls, imageryLayer, rasterInfo, rasterMap } from "./map.js";
import { escapeHtml, runJob } from "./tools.js";

const REJECTED_GREY = [150, 150, 150];

class ReviewPage {
  constructor(map, view, info, path) {
    Object.assign(this, { map, view, info, path });
    this.source = new ol.source.Vector();
    this.threshold = 0;
    this.styles = new Map();
    this.layer = new ol.layer.Vector({
      source: this.source,
      style: (f) => this.style(f, false),
      properties: { name: "features" },
    });
    map.addLayer(this.layer);
    this.select = new ol.interaction.Select({
      layers: [this.layer],
      style: (f) => this.style(f, true),
      filter: (f) => this.isShown(f),
      hitTolerance: 4,
    });
    map.addInteraction(this.select);
    this.select.getFeatures().on(["add", "remove"], () => this.renderSelection());
    this.store = new DecisionStore(info, path, {
      onState: (state, message) => this.saveState(state, message),
      onConflict: (message) => this.conflict(message),
    });
  }

  async start() {
    const data = await this.store.load();
    this.classField = data.class_field;
    this.scoreField = data.score_field;
    this.classes = data.classes;
    this.source.addFeatures(data.features);
    const slider = document.getElementById("confidence");
    slider.max = String(data.score_max);
    slider.step = String(data.score_max / 100);
    slider.disabled = !this.scoreField;
    document.getElementById("review-class").innerHTML = this.classes
      .map((c, i) => `<option value="${escapeHtml(c)}">${i + 1}: ${escapeHtml(c)}</option>`)
      .join("");
    this.render();
    setStatus(`${data.features.length} features of ${this.path} loaded`, "ok");
  }

  // --- what is shown and how ----------------------------------------------------------------

  originalClass(feature) {
    const value = this.classField ? feature.get(this.classField) : "1";
    return value === null || value === undefined ? "" : String(value);
  }

  /** The class after review: the reviewed class of an accepted feature, else the original. */
  classOf(feature) {
    return feature.get(REVIEWED) || this.originalClass(feature);
  }

  colour(cls) {
    return colourOf({ Value: this.classes.indexOf(cls) + 1 });
  }

  score(feature) {
    return this.scoreField ? Number(feature.get(this.scoreField)) : null;
  }

  isShown(feature) {
    return !this.scoreField || this.score(feature) >= this.threshold;
  }

  style(feature, selected) {
    if (!this.isShown(feature)) return null;
    const status = feature.get(STATUS) || "";
    const rgb = status === REJECTED ? REJECTED_GREY : this.colour(this.classOf(feature));
    const key = `${rgb}|${status}|${selected}`;
    if (!this.styles.has(key)) {
      const fill = { [ACCEPTED]: 0.3, [REJECTED]: 0 }[status] ?? 0.08;
      const stroke = new ol.style.Stroke({
        color: `rgb(${rgb})`,
        width: status === ACCEPTED || selected ? 3 : 2,
        lineDash: status === REJECTED ? [6, 4] : undefined,
      });
      const styles = [
        new ol.style.Style({ stroke, fill: new ol.style.Fill({ color: `rgba(${rgb},${fill})` }) }),
      ];
      if (selected) {
        styles.unshift(
          new ol.style.Style({ stroke: new ol.style.Stroke({ color: "#fff", width: 7 }) }),
        );
      }
      this.styles.set(key, styles);
    }
    return this.styles.get(key);
  }

  setThreshold(value) {
    this.threshold = value;
    document.getElementById("confidence-value").textContent = String(value);
    const selected = this.select.getFeatures();
    for (const f of selected.getArray().slice()) if (!this.isShown(f)) selected.remove(f);
    this.layer.changed();
    this.render();
  }

  // --- decisions ----------------------------------------------------------------------------

  /** Decide for the selected features: "accepted" (with `cls`, else the class they have),
   * "rejected", or null (clear); with one selected, move on to the next. */
  decide(status, cls = null) {
    const selected = this.select.getFeatures().getArray().slice();
    if (!selected.length) return setStatus("select a feature first (click it or a row)", "error");
    for (const f of selected) this.decideOne(f, status, cls);
    this.layer.changed();
    this.render();
    if (selected.length === 1) this.step(1, selected[0]);
  }

  decideOne(feature, status, cls) {
    const reviewed = status === ACCEPTED ? cls || this.classOf(feature) : null;
    feature.setProperties({ [STATUS]: status, [REVIEWED]: reviewed });
    this.store.decide(feature.getId(), status, reviewed);
  }

  acceptShown() {
    const open = this.shownFeatures().filter((f) => !f.get(STATUS));
    if (!open.length) return setStatus("every feature shown is reviewed");
    open.forEach((f) => this.decideOne(f, ACCEPTED, null));
    this.layer.changed();
    this.render();
    setStatus(`${open.length} features accepted`, "ok");
  }

  reclassTo(index) {
    const cls = this.classes[index];
    if (cls === undefined) return;
    document.getElementById("review-class").value = cls;
    this.decide(ACCEPTED, cls);
  }

  saveState(state, message) {
    document.body.dataset.save = state;
    if (state === "error") setStatus(`not saved: ${message}`, "error");
    else if (state === "saved") setStatus(message, "ok");
    else setStatus(state === "saving" ? "saving…" : "unsaved decisions");
  }

  conflict(message) {
    const banner = document.getElementById("conflict");
    banner.querySelector(".message").textContent = message;
    banner.hidden = false;
    document.body.dataset.save = "conflict";
    setStatus("not saved: the results changed elsewhere; reload to get them", "error");
  }

  // --- the attribute table, linked to the map -----------------------------------------------

  shownFeatures() {
    return this.source
      .getFeatures()
      .filter((f) => this.isShown(f))
      .sort((a, b) => a.getId() - b.getId());
  }

  render() {
    const all = this.source.getFeatures();
    const shown = this.shownFeatures();
    const counts = { [ACCEPTED]: 0, [REJECTED]: 0, "": 0 };
    all.forEach((f) => (counts[f.get(STATUS) || ""] += 1));
    document.getElementById("features-count").textContent = `(${shown.length} of ${all.length} shown)`;
    document.getElementById("review-counts").textContent =
      `${counts[ACCEPTED]} accepted · ${counts[REJECTED]} rejected · ${counts[""]} not reviewed`;
    document.querySelector("#features tbody").innerHTML = shown
      .map((f) => {
        const cls = this.classOf(f);
        const score = this.score(f);
        return (
          `<tr data-fid="${f.getId()}" data-status="${f.get(STATUS) || ""}"><td>${f.getId()}</td>` +
          `<td><span class="swatch" style="background:rgb(${this.colour(this.originalClass(f))})"></span>` +
          `${escapeHtml(this.originalClass(f))}</td>` +
          `<td>${score === null ? "" : score.toFixed(score > 1 ? 1 : 3)}</td>` +
          `<td class="status">${f.get(STATUS) || ""}</td>` +
          `<td>${f.get(STATUS) === ACCEPTED ? escapeHtml(cls) : ""}</td></tr>`
        );
      })
      .join("");
    this.renderSelection();
  }

  renderSelection() {
    const ids = new Set(this.select.getFeatures().getArray().map((f) => f.getId()));
    let first = null;
    document.querySelectorAll("#features tbody tr").forEach((row) => {
      const on = ids.has(Number(row.dataset.fid));
      row.classList.toggle("selected", on);
      if (on && !first) first = row;
    });
    if (first) first.scrollIntoView({ block: "nearest" });
  }

  /** Select feature `fid` and zoom to it. */
  zoomTo(fid) {
    const feature = this.source.getFeatureById(fid);
    if (!feature) return;
    const selected = this.select.getFeatures();
    selected.clear();
    selected.push(feature);
    const finest = this.info.resolutions[this.info.resolutions.length - 1];
    this.view.fit(feature.getGeometry().getExtent(), {
      padding: [120, 120, 120, 120],
      minResolution: finest / 4,
      duration: 0,
    });
  }

  /** Select the next (`by` 1) or previous (-1) feature shown, after `from` or the selection. */
  step(by, from = null) {
    const shown = this.shownFeatures();
    if (!shown.length) return;
    const current = from || this.select.getFeatures().item(0);
    const at = current ? shown.indexOf(current) : -1;
    const next = shown[at < 0 ? 0 : Math.min(shown.length - 1, Math.max(0, at + by))];
    this.zoomTo(next.getId());
  }

  // --- accuracy -----------------------------------------------------------------------------

  async computeAccuracy() {
    const box = document.getElementById("accuracy-result");
    box.dataset.status = "running";
    box.textContent = "saving decisions…";
    try {
      await this.store.flush();
      const { data: truth } = await request(
        withQuery("/review/ground-truth", { path: this.path }),
        { method: "POST" },
      );
      const inputs = {
        detected_features: this.path,
        ground_truth_features: truth.path,
        out_accuracy_table: "accuracy.csv",
        min_iou: Number(document.getElementById("accuracy-iou").value) || 0.5,
      };
      if (this.classField) {
        // ClassLabel (classify-objects) is not a field the tool finds by itself
        inputs.detected_class_value_field = this.classField;
        inputs.ground_truth_class_value_field = this.classField;
      }
      const { job, results } = await runJob(
        "compute_accuracy_for_object_detection",
        inputs,
        (status) => (box.textContent = `${status.status}: ${status.message}`),
      );
      box.dataset.status = "successful";
      box.dataset.job = job.jobID;
      box.innerHTML =
        `<p>${truth.count} accepted features as ground truth (${escapeHtml(truth.path)})</p>` +
        `<pre>${escapeHtml(results.report)}</pre>` +
        `<a href="${results.out_accuracy_table.href}" target="_blank">accuracy table</a>`;
    } catch (err) {
      box.dataset.status = "failed";
      box.textContent = err.message;
    }
  }
}

/** The classified raster as a layer in its colour table's colours, its opacity and legend. */
async function classifiedLayer(map, projection, path) {
  const info = await rasterInfo(path);
  const layer = imageryLayer(info, projection, { bands: [1], stretch: "colormap" });
  layer.set("name", "classified");
  const opacity = document.getElementById("classified-opacity");
  layer.setOpacity(Number(opacity.value));
  map.getLayers().insertAt(1, layer);
  opacity.addEventListener("input", () => layer.setOpacity(Number(opacity.value)));
  const visible = document.getElementById("classified-visible");
  visible.addEventListener("change", () => layer.setVisible(visible.checked));
  const { classes } = await getJSON(withQuery("/review/legend", { raster: path }));
  document.querySelector("#legend tbody").innerHTML = classes
    .map(
      (c) =>
        `<tr data-value="${c.Value}"><td><span class="swatch" style="background:rgb(${c.Color})"></span></td>` +
        `<td>${c.Value}</td><td>${escapeHtml(c.Name)}</td></tr>`,
    )
    .join("");
  document.getElementById("classified-name").textContent = path;
  document.getElementById("classified-section").hidden = false;
  return { layer, info, classes };
}

function wire(page) {
  const on = (id, handler) => document.getElementById(id).addEventListener("click", handler);
  on("accept", () => page.decide(ACCEPTED));
  on("reject", () => page.decide(REJECTED));
  on("clear", () => page.decide(null));
  on("reclass", () => page.decide(ACCEPTED, document.getElementById("review-class").value));
  on("accept-shown", () => page.acceptShown());
  on("accuracy-run", () => page.computeAccuracy());
  on("reload", () => window.location.reload());
  const slider = document.getElementById("confidence");
  slider.addEventListener("input", () => page.setThreshold(Number(slider.value)));
  document.querySelector("#features tbody").addEventListener("click", (e) => {
    const row = e.target.closest("tr");
    if (row) page.zoomTo(Number(row.dataset.fid));
  });
  const keys = {
    a: () => page.decide(ACCEPTED),
    x: () => page.decide(REJECTED),
    u: () => page.decide(null),
    c: () => page.decide(ACCEPTED, document.getElementById("review-class").value),
    n: () => page.step(1),
    arrowdown: () => page.step(1),
    p: () => page.step(-1),
    arrowup: () => page.step(-1),
  };
  document.addEventListener("keydown", (e) => {
    if (["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName)) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key.toLowerCase();
    if (keys[key]) keys[key]();
    else if (/^[1-9]$/.test(key)) page.reclassTo(Number(key) - 1);
    else return;
    e.preventDefault();
  });
}

async function main() {
  const raster = query.get("raster");
  const features = query.get("features");
  const classified = query.get("classified");
  if (!raster || (!features && !classified)) {
    setStatus("give the page ?raster=PATH&features=PATH.gpkg and/or &classified=PATH.tif", "error");
    return;
  }
  document.getElementById("raster-name").textContent = raster;
  const info = await rasterInfo(raster);
  const { map, view, projection, imagery } = rasterMap("map", info);
  displayControls(document.getElementById("display"), info, imagery);
  window.rasterlearn = { map, info };
  if (classified) window.rasterlearn.classified = await classifiedLayer(map, projection, classified);
  if (features) {
    const page = new ReviewPage(map, view, info, features);
    window.rasterlearn.page = page;
    wire(page);
    await page.start();
    document.getElementById("review-section").hidden = false;
    document.getElementById("accuracy-section").hidden = false;
  } else {
    setStatus(`${classified} shown`, "ok");
  }
  document.body.dataset.ready = "true";
}

main().catch((err) => setStatus(err.message, "error"));
