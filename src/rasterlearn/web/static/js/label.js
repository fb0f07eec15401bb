// The label page (ArcGIS's "Label Objects for Deep Learning"): draw training samples of a class
// schema over the imagery, saved as you go to a samples GeoPackage; export and train from here.
//   /web/label?raster=files/scene.tif&samples=files/scene_samples.gpkg
/* global ol */

import { query, setStatus, withQuery, getJSON } from "./api.js";
import { ClassTable, colourOf } from "./classes.js";
import { displayControls, rasterInfo, rasterMap } from "./map.js";
import { NAME, SampleStore, VALUE } from "./samples.js";
import { outputPath, toolForm } from "./tools.js";
import { MODEL_EVENT, ModelAssist } from "./assist.js";

const HISTORY = 100;
const KEYS = { s: "select", r: "rectangle", p: "polygon", f: "freehand", t: "point" };

function styleFor(table, selected) {
  const cache = new Map();
  return (feature) => {
    const cls = table.byValue(feature.get(VALUE));
    const rgb = cls ? colourOf(cls) : [255, 255, 255];
    const key = rgb.join(",");
    if (!cache.has(key)) {
      const stroke = new ol.style.Stroke({ color: `rgb(${key})`, width: selected ? 3 : 2 });
      const fill = new ol.style.Fill({ color: `rgba(${key},${selected ? 0.35 : 0.15})` });
      // a dark (selected: white) outline under the class colour: visible on any imagery
      const halo = new ol.style.Stroke({ color: selected ? "#fff" : "rgba(0,0,0,0.7)", width: selected ? 6 : 4 });
      const styles = [
        new ol.style.Style({ stroke: halo }),
        new ol.style.Style({
          stroke,
          fill,
          image: new ol.style.Circle({ radius: selected ? 7 : 5, stroke: halo, fill: new ol.style.Fill({ color: `rgb(${key})` }) }),
        }),
      ];
      cache.set(key, styles);
    }
    return cache.get(key);
  };
}

function shapeOf(geometry) {
  const type = geometry.getType();
  if (type === "Point") return "point";
  if (type !== "Polygon") return type.toLowerCase();
  const ring = geometry.getCoordinates()[0] || [];
  return `polygon (${Math.max(0, ring.length - 1)} vertices)`;
}

class LabelPage {
  constructor(info, samplesPath) {
    this.info = info;
    const { map, view, imagery } = rasterMap("map", info);
    Object.assign(this, { map, view, imagery });
    this.source = new ol.source.Vector();
    this.table = new ClassTable(document.querySelector("#classes tbody"), {
      onChange: (kind, old, cls) => this.classEdited(kind, old, cls),
      onPick: (value) => setStatus(`drawing class ${this.table.byValue(value).Name}`),
      counts: () => this.counts(),
      refuse: (message) => setStatus(message, "error"),
    });
    this.layer = new ol.layer.Vector({
      source: this.source,
      style: styleFor(this.table, false),
      properties: { name: "samples" },
    });
    map.addLayer(this.layer);
    this.store = new SampleStore(info, samplesPath, {
      onState: (state, message) => this.saveState(state, message),
      onConflict: (message) => this.conflict(message),
    });
    this.history = [];
    this.nextId = 1;
    this.interactions();
  }

  async start() {
    const { features, classes } = await this.store.load();
    features.forEach((f) => f.set("sample", this.nextId++));
    this.source.addFeatures(features);
    this.table.set(classes);
    this.remember();
    this.render();
    this.useTool("rectangle");
    setStatus(`${features.length} samples loaded`, "ok");
  }

  // --- interactions -------------------------------------------------------------------------

  interactions() {
    this.select = new ol.interaction.Select({
      layers: [this.layer],
      style: styleFor(this.table, true),
      hitTolerance: 4,
    });
    const selected = this.select.getFeatures();
    this.translate = new ol.interaction.Translate({ features: selected });
    this.modify = new ol.interaction.Modify({ features: selected, pixelTolerance: 8 });
    for (const i of [this.select, this.translate, this.modify]) this.map.addInteraction(i);
    this.translate.on("translateend", () => this.changed());
    this.modify.on("modifyend", () => this.changed());
    selected.on(["add", "remove"], () => this.renderSelection());
    this.draw = null;
  }

  useTool(tool) {
    if (this.draw) this.map.removeInteraction(this.draw);
    this.draw = null;
    const editing = tool === "select";
    for (const i of [this.select, this.translate, this.modify]) i.setActive(editing);
    if (!editing) {
      this.select.getFeatures().clear();
      const options = {
        rectangle: { type: "Circle", geometryFunction: ol.interaction.Draw.createBox() },
        polygon: { type: "Polygon" },
        freehand: { type: "Polygon", freehand: true },
        point: { type: "Point" },
      }[tool];
      this.draw = new ol.interaction.Draw({ source: this.source, ...options });
      this.draw.on("drawend", (event) => {
        const cls = this.table.currentClass();
        event.feature.setProperties({ [VALUE]: cls.Value, [NAME]: cls.Name });
        event.feature.set("sample", this.nextId++);
        Promise.resolve().then(() => this.changed()); // once the feature is in the source
      });
      this.map.addInteraction(this.draw);
    }
    this.tool = tool;
    document.querySelectorAll("[data-tool]").forEach((b) => {
      b.classList.toggle("active", b.dataset.tool === tool);
    });
  }

  deleteSelected() {
    const selected = this.select.getFeatures().getArray().slice();
    if (!selected.length) return setStatus("select samples to delete first", "error");
    this.select.getFeatures().clear();
    selected.forEach((f) => this.source.removeFeature(f));
    this.changed();
  }

  reclassSelected() {
    const selected = this.select.getFeatures().getArray();
    if (!selected.length) return setStatus("select samples to reclass first", "error");
    const cls = this.table.currentClass();
    selected.forEach((f) => f.setProperties({ [VALUE]: cls.Value, [NAME]: cls.Name }));
    this.changed();
  }

  // --- edits, history and saving ------------------------------------------------------------

  snapshot() {
    const features = this.source.getFeatures().sort((a, b) => a.get("sample") - b.get("sample"));
    return { classes: this.table.classes.map((c) => ({ ...c })), features };
  }

  remember() {
    const { classes, features } = this.snapshot();
    const format = new ol.format.GeoJSON();
    this.history.push({
      classes,
      features: features.map((f) => ({ id: f.get("sample"), json: format.writeFeatureObject(f) })),
    });
    if (this.history.length > HISTORY) this.history.shift();
  }

  changed() {
    this.remember();
    this.render();
    this.store.schedule(() => this.snapshot());
  }

  undo() {
    if (this.history.length < 2) return setStatus("nothing to undo");
    this.history.pop();
    const previous = this.history[this.history.length - 1];
    const format = new ol.format.GeoJSON();
    this.select.getFeatures().clear();
    this.source.clear();
    this.source.addFeatures(
      previous.features.map(({ id, json }) => {
        const feature = format.readFeature(json);
        feature.set("sample", id);
        return feature;
      }),
    );
    this.table.set(previous.classes);
    this.render();
    this.store.schedule(() => this.snapshot());
    setStatus("undone");
  }

  classEdited(kind, old, cls) {
    for (const f of this.source.getFeatures()) {
      if (old && f.get(VALUE) === old.Value && cls) {
        f.setProperties({ [VALUE]: cls.Value, [NAME]: cls.Name });
      }
    }
    this.layer.changed();
    this.changed();
  }

  saveState(state, message) {
    document.body.dataset.save = state;
    if (state === "error") setStatus(`not saved: ${message}`, "error");
    else if (state === "saved") setStatus(message, "ok");
    else setStatus(state === "saving" ? "saving…" : "unsaved changes");
  }

  conflict(message) {
    const banner = document.getElementById("conflict");
    banner.querySelector(".message").textContent = message;
    banner.hidden = false;
    document.body.dataset.save = "conflict";
    setStatus("not saved: the samples changed elsewhere; reload to get them", "error");
  }

  async loadClasses(source) {
    const { classes } = await getJSON(withQuery("/samples/classes", { source }));
    const loaded = new Set(classes.map((c) => c.Value));
    const kept = this.table.classes.filter((c) => !loaded.has(c.Value) && this.counts()[c.Value]);
    this.table.set([...classes, ...kept]);
    for (const f of this.source.getFeatures()) {
      const cls = this.table.byValue(f.get(VALUE));
      if (cls) f.set(NAME, cls.Name);
    }
    this.changed();
    setStatus(`${classes.length} classes loaded from ${source}`, "ok");
  }

  // --- tables -------------------------------------------------------------------------------

  counts() {
    const counts = {};
    for (const f of this.source.getFeatures()) counts[f.get(VALUE)] = (counts[f.get(VALUE)] || 0) + 1;
    return counts;
  }

  render() {
    this.table.render();
    const features = this.snapshot().features;
    document.getElementById("samples-count").textContent = `(${features.length})`;
    document.querySelector("#samples tbody").innerHTML = features
      .map((f) => {
        const cls = this.table.byValue(f.get(VALUE));
        const colour = cls ? `rgb(${colourOf(cls).join(",")})` : "#fff";
        return (
          `<tr data-sample="${f.get("sample")}"><td>${f.get("sample")}</td>` +
          `<td><span class="swatch" style="background:${colour}"></span>${cls ? cls.Name : f.get(VALUE)}</td>` +
          `<td>${shapeOf(f.getGeometry())}</td></tr>`
        );
      })
      .join("");
    this.renderSelection();
  }

  renderSelection() {
    const ids = new Set(this.select.getFeatures().getArray().map((f) => f.get("sample")));
    let first = null;
    document.querySelectorAll("#samples tbody tr").forEach((row) => {
      const on = ids.has(Number(row.dataset.sample));
      row.classList.toggle("selected", on);
      if (on && !first) first = row;
    });
    if (first) first.scrollIntoView({ block: "nearest" });
  }

  zoomTo(id) {
    const feature = this.source.getFeatures().find((f) => f.get("sample") === id);
    if (!feature) return;
    if (this.tool !== "select") this.useTool("select");
    const selected = this.select.getFeatures();
    selected.clear();
    selected.push(feature);
    const finest = this.info.resolutions[this.info.resolutions.length - 1];
    this.view.fit(feature.getGeometry().getExtent(), {
      padding: [80, 80, 80, 80],
      minResolution: finest / 4,
      duration: 0,
    });
  }
}

function wire(page) {
  document.querySelectorAll("[data-tool]").forEach((b) => {
    b.addEventListener("click", () => page.useTool(b.dataset.tool));
  });
  document.getElementById("delete").addEventListener("click", () => page.deleteSelected());
  document.getElementById("reclass").addEventListener("click", () => page.reclassSelected());
  document.getElementById("undo").addEventListener("click", () => page.undo());
  document.getElementById("save").addEventListener("click", () => page.store.flush().catch(() => {}));
  document.getElementById("add-class").addEventListener("click", () => page.table.add());
  document.getElementById("reload").addEventListener("click", () => window.location.reload());
  document.querySelector("#samples tbody").addEventListener("click", (e) => {
    const row = e.target.closest("tr");
    if (row) page.zoomTo(Number(row.dataset.sample));
  });
  document.getElementById("load-classes").addEventListener("submit", (e) => {
    e.preventDefault();
    const source = e.target.elements.source.value.trim();
    if (source) page.loadClasses(source).catch((err) => setStatus(err.message, "error"));
  });
  document.addEventListener("keydown", (e) => {
    if (["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName)) return;
    const key = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && key === "z") page.undo();
    else if ((e.ctrlKey || e.metaKey) && key === "s") page.store.flush().catch(() => {});
    else if (e.ctrlKey || e.metaKey || e.altKey) return;
    else if (KEYS[key]) page.useTool(KEYS[key]);
    else if (key === "delete" || key === "backspace") page.deleteSelected();
    else if (key === "c") page.reclassSelected();
    else if (key === "escape" && page.draw) page.draw.abortDrawing();
    else if (/^[1-9]$/.test(key)) page.table.pickIndex(Number(key) - 1);
    else return;
    e.preventDefault();
  });
}

async function jobForms(page, raster, samples) {
  const save = () => page.store.flush();
  let exported = null;
  const train = await toolForm(document.getElementById("train-form"), "train_deep_learning_model", {
    values: { out_folder: "model", max_epochs: 10 },
    shown: ["in_folder", "out_folder", "model_type", "max_epochs", "batch_size"],
    onDone: (job, inputs) => {
      const model = outputPath(job.jobID, inputs, "out_folder");
      document.dispatchEvent(new CustomEvent(MODEL_EVENT, { detail: model }));
    },
  });
  await toolForm(document.getElementById("export-form"), "export_training_data", {
    values: { in_raster: raster, in_class_data: samples, out_folder: "chips" },
    shown: ["in_raster", "out_folder", "in_class_data", "metadata_format", "tile_size_x", "tile_size_y"],
    before: save,
    onDone: (job, inputs) => {
      exported = outputPath(job.jobID, inputs, "out_folder");
      train.elements.namedItem("in_folder").value = exported;
    },
  });
}

async function main() {
  const raster = query.get("raster");
  const samples = query.get("samples");
  if (!raster || !samples) {
    setStatus("give the page ?raster=PATH&samples=PATH.gpkg (paths in the data folder)", "error");
    return;
  }
  document.getElementById("raster-name").textContent = raster;
  const info = await rasterInfo(raster);
  const page = new LabelPage(info, samples);
  window.rasterlearn = { page, map: page.map, info };
  displayControls(document.getElementById("display"), info, page.imagery);
  wire(page);
  await page.start();
  await jobForms(page, raster, samples);
  window.rasterlearn.assist = new ModelAssist(page, raster);
  await window.rasterlearn.assist.buildForms();
  document.body.dataset.ready = "true";
}

main().catch((err) => setStatus(err.message, "error"));
