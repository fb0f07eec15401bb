// The label page's model tools: run the trained model (Detect Objects, Classify Pixels forms,
// then a link to review the result), and model-assisted labeling: "Suggest" detects objects in
// the current view (a Detect Objects job whose processing extent is the view) and shows them
// as candidates to accept into the samples, with their class, or discard.
/* global ol */

import { getJSON, setStatus, withQuery } from "./api.js";
import { toMap } from "./map.js";
import { NAME, VALUE } from "./samples.js";
import { escapeHtml, outputPath, runJob, toolForm } from "./tools.js";

/** The event (detail: the model's data path) the train form sends when a model is trained. */
export const MODEL_EVENT = "rasterlearn:model";

const CANDIDATE_STYLE = [
  new ol.style.Style({ stroke: new ol.style.Stroke({ color: "rgba(0,0,0,0.6)", width: 4 }) }),
  new ol.style.Style({
    stroke: new ol.style.Stroke({ color: "#facc15", width: 2, lineDash: [6, 4] }),
    fill: new ol.style.Fill({ color: "rgba(250,204,21,0.12)" }),
  }),
];

function reviewLink(raster, kind, path) {
  const url = withQuery("/web/review", { raster, [kind]: path });
  return `<a class="review-link" href="${url}" target="_blank">Review</a>`;
}

export class ModelAssist {
  /**
   * @param {object} page the label page (its map, view, info, samples source, class table,
   *   changed())
   * @param {string} raster the imagery's data path
   */
  constructor(page, raster) {
    this.page = page;
    this.raster = raster;
    this.source = new ol.source.Vector();
    this.layer = new ol.layer.Vector({
      source: this.source,
      style: CANDIDATE_STYLE,
      properties: { name: "candidates" },
    });
    page.map.addLayer(this.layer);
    this.model = document.getElementById("model-path");
    this.forms = [];
    document.addEventListener(MODEL_EVENT, (e) => this.useModel(e.detail));
    this.model.addEventListener("change", () => this.useModel(this.model.value.trim()));
    document.getElementById("suggest").addEventListener("click", () => this.suggest());
    document.getElementById("accept-all").addEventListener("click", () => {
      this.accept(this.source.getFeatures());
    });
    document.getElementById("discard-all").addEventListener("click", () => {
      this.discard(this.source.getFeatures());
    });
    document.querySelector("#candidates tbody").addEventListener("click", (e) => {
      const row = e.target.closest("tr");
      const feature = row && this.source.getFeatureById(Number(row.dataset.candidate));
      if (!feature) return;
      if (e.target.dataset.action === "accept") this.accept([feature]);
      else if (e.target.dataset.action === "discard") this.discard([feature]);
      else this.page.view.fit(feature.getGeometry().getExtent(), { padding: [120, 120, 120, 120] });
    });
  }

  /** The Detect Objects and Classify Pixels forms, each ending with a link to review. */
  async buildForms() {
    const common = ["in_raster", "in_model_definition", "arguments"];
    const runs = [
      ["detect-form", "detect_objects", "out_detected_objects", "detections.gpkg", "features"],
      ["classify-form", "classify_pixels", "out_classified_raster", "classified.tif", "classified"],
    ];
    for (const [id, process, output, name, kind] of runs) {
      const container = document.getElementById(id);
      const form = await toolForm(container, process, {
        values: { in_raster: this.raster, [output]: name },
        shown: [...common, output, "processing_extent"],
        onDone: (job, inputs) => {
          const path = outputPath(job.jobID, inputs, output);
          container
            .querySelector(".job-results")
            .insertAdjacentHTML("afterbegin", reviewLink(inputs.in_raster, kind, path) + " ");
        },
      });
      this.forms.push(form);
    }
  }

  useModel(path) {
    this.model.value = path;
    for (const form of this.forms) form.elements.namedItem("in_model_definition").value = path;
    if (path) setStatus(`model ${path}: Suggest, or run it below`, "ok");
  }

  /** The current view in the raster's coordinates (pixel space: rows down). */
  viewExtent() {
    const { map, view, info } = this.page;
    const [x0, y0, x1, y1] = ol.extent.getIntersection(
      view.calculateExtent(map.getSize()),
      info.extent,
    );
    return info.flip_y ? [x0, -y1, x1, -y0] : [x0, y0, x1, y1];
  }

  async suggest() {
    const model = this.model.value.trim();
    const box = document.getElementById("suggest-job");
    if (!model) return setStatus("train a model or give one (a model folder, .emd or .dlpk)", "error");
    const threshold = Number(document.getElementById("suggest-threshold").value);
    const inputs = {
      in_raster: this.raster,
      in_model_definition: model,
      out_detected_objects: "suggestions.gpkg",
      processing_extent: this.viewExtent(),
      arguments: { threshold: String(threshold) },
    };
    box.hidden = false;
    box.dataset.status = "running";
    box.textContent = "detecting in the view…";
    try {
      const { job } = await runJob("detect_objects", inputs, (status) => {
        box.textContent = `${status.status}: ${status.message}`;
      });
      const path = outputPath(job.jobID, inputs, "out_detected_objects");
      const data = await getJSON(withQuery("/review/features", { path }));
      const found = new ol.format.GeoJSON().readFeatures(data.features);
      found.forEach((f) => {
        toMap(this.page.info, f.getGeometry());
        f.set("candidateClass", data.class_field ? String(f.get(data.class_field)) : "");
        f.set("candidateScore", data.score_field ? Number(f.get(data.score_field)) : null);
      });
      this.source.clear();
      this.source.addFeatures(found);
      box.dataset.status = "successful";
      box.dataset.job = job.jobID;
      box.textContent = `${found.length} candidates in the view`;
      this.render();
    } catch (err) {
      box.dataset.status = "failed";
      box.textContent = err.message;
    }
  }

  /** The class table's class a candidate goes into: by name (or value), else the current. */
  classFor(candidate) {
    const table = this.page.table;
    const name = candidate.get("candidateClass");
    return (
      table.classes.find((c) => c.Name === name) ||
      table.classes.find((c) => String(c.Value) === name) ||
      table.currentClass()
    );
  }

  accept(candidates) {
    if (!candidates.length) return;
    for (const candidate of candidates) {
      const cls = this.classFor(candidate);
      const sample = new ol.Feature(candidate.getGeometry().clone());
      sample.setProperties({ [VALUE]: cls.Value, [NAME]: cls.Name, sample: this.page.nextId++ });
      this.page.source.addFeature(sample);
      this.source.removeFeature(candidate);
    }
    this.page.changed();
    this.render();
    setStatus(`${candidates.length} candidates accepted into the samples`, "ok");
  }

  discard(candidates) {
    candidates.slice().forEach((c) => this.source.removeFeature(c));
    this.render();
  }

  render() {
    const candidates = this.source.getFeatures().sort((a, b) => a.getId() - b.getId());
    document.getElementById("candidates-section").hidden = !candidates.length;
    document.getElementById("candidates-count").textContent = `(${candidates.length})`;
    document.querySelector("#candidates tbody").innerHTML = candidates
      .map((c) => {
        const score = c.get("candidateScore");
        return (
          `<tr data-candidate="${c.getId()}"><td>${c.getId()}</td>` +
          `<td>${escapeHtml(this.classFor(c).Name)}</td>` +
          `<td>${score === null ? "" : score.toFixed(score > 1 ? 1 : 3)}</td>` +
          `<td><button data-action="accept">Accept</button>` +
          `<button data-action="discard">Discard</button></td></tr>`
        );
      })
      .join("");
  }
}
