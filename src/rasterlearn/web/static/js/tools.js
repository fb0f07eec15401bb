// Tool forms built from the service's process descriptions (the tools' declarations), submitted
// as jobs (OGC API - Processes, respond-async), with the job's progress shown.

import { getJSON, request } from "./api.js";

const POLL_MS = 1000;

function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function inputFor(name, input) {
  const schema = input.schema || {};
  const id = `param-${name}`;
  const kind = (input.keywords || [])[1] || schema.type;
  let field;
  if (schema.enum) {
    const options = (input.minOccurs ? [] : [""]).concat(schema.enum);
    field = `<select id="${id}" name="${name}">${options
      .map((o) => `<option value="${escapeHtml(o)}">${escapeHtml(o || "(default)")}</option>`)
      .join("")}</select>`;
  } else if (schema.type === "boolean") {
    field = `<input id="${id}" name="${name}" type="checkbox">`;
  } else if (schema.type === "integer" || schema.type === "number") {
    const step = schema.type === "integer" ? "1" : "any";
    field = `<input id="${id}" name="${name}" type="number" step="${step}">`;
  } else if (kind === "key_values") {
    field = `<textarea id="${id}" name="${name}" rows="2" placeholder="NAME=VALUE, one a line"></textarea>`;
  } else {
    field = `<input id="${id}" name="${name}" type="text">`;
  }
  const required = input.minOccurs ? ' <span class="required">*</span>' : "";
  return (
    `<div class="param" data-name="${name}" title="${escapeHtml(input.description)}">` +
    `<label for="${id}">${escapeHtml(input.title)}${required}</label>${field}</div>`
  );
}

function setValue(form, name, value) {
  const field = form.elements.namedItem(name);
  if (!field || value === undefined || value === null) return;
  if (field.type === "checkbox") field.checked = Boolean(value);
  else if (typeof value === "object") {
    field.value = Array.isArray(value)
      ? value.join(", ")
      : Object.entries(value)
          .map(([k, v]) => `${k}=${v}`)
          .join("\n");
  } else field.value = String(value);
}

function readValue(field, input) {
  const schema = input.schema || {};
  if (field.type === "checkbox") return field.checked;
  const text = field.value.trim();
  if (text === "") return undefined;
  if (schema.type === "integer" || schema.type === "number") return Number(text);
  if (schema.type === "array") return text.split(/[,\s]+/).filter(Boolean);
  if (schema.type === "object") return text; // NAME=VALUE lines; the service parses them
  return text;
}

/**
 * A form for a tool, from its process description.
 * @param {HTMLElement} container where the form goes
 * @param {string} processId e.g. "export_training_data"
 * @param {{values?: object, shown?: string[], before?: Function, onDone?: Function}} options
 *   values to start from; the parameters shown outside "More parameters"; awaited before the
 *   job is submitted (e.g. to save edits first); called with (job, inputs, results) on success
 */
export async function toolForm(container, processId, options = {}) {
  const description = await getJSON(`/processes/${processId}`);
  const values = options.values || {};
  const shown = new Set(options.shown || []);
  const names = Object.keys(description.inputs);
  const main = names.filter((n) => description.inputs[n].minOccurs || shown.has(n));
  const more = names.filter((n) => !main.includes(n));
  container.innerHTML =
    `<form class="tool-form" data-process="${processId}">` +
    `<h3 title="${escapeHtml(description.description)}">${escapeHtml(description.title)}</h3>` +
    main.map((n) => inputFor(n, description.inputs[n])).join("") +
    `<details><summary>More parameters</summary>` +
    more.map((n) => inputFor(n, description.inputs[n])).join("") +
    `</details><button type="submit">Run</button>` +
    `<div class="job" hidden><progress max="100" value="0"></progress>` +
    `<span class="job-message"></span><div class="job-results"></div></div></form>`;
  const form = container.querySelector("form");
  for (const name of names) {
    const schema = description.inputs[name].schema || {};
    setValue(form, name, name in values ? values[name] : schema.default);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(form, description, options);
  });
  return form;
}

async function submit(form, description, { before, onDone }) {
  const inputs = {};
  for (const [name, input] of Object.entries(description.inputs)) {
    const field = form.elements.namedItem(name);
    const value = field ? readValue(field, input) : undefined;
    const fallback = (input.schema || {}).default;
    if (value !== undefined && JSON.stringify(value) !== JSON.stringify(fallback)) {
      inputs[name] = value;
    }
  }
  const box = form.querySelector(".job");
  const message = form.querySelector(".job-message");
  box.hidden = false;
  box.dataset.status = "submitting";
  message.textContent = "submitting…";
  form.querySelector(".job-results").innerHTML = "";
  try {
    if (before) await before();
    const { data } = await request(`/processes/${description.id}/execution`, {
      method: "POST",
      body: { inputs },
      headers: { Prefer: "respond-async" },
    });
    follow(form, data.jobID, inputs, onDone);
  } catch (err) {
    box.dataset.status = "failed";
    message.textContent = err.message;
  }
}

async function follow(form, jobId, inputs, onDone) {
  const box = form.querySelector(".job");
  const bar = box.querySelector("progress");
  const message = box.querySelector(".job-message");
  box.dataset.job = jobId;
  for (;;) {
    const job = await getJSON(`/jobs/${jobId}`);
    box.dataset.status = job.status;
    bar.value = job.progress || 0;
    message.textContent = `${job.status}${job.message ? ": " + job.message : ""}`;
    if (job.status === "successful") {
      const results = await getJSON(`/jobs/${jobId}/results`);
      showResults(form, jobId, inputs, results);
      if (onDone) onDone(job, inputs, results);
      return;
    }
    if (job.status === "failed" || job.status === "dismissed") return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function showResults(form, jobId, inputs, results) {
  const links = Object.entries(results)
    .filter(([name]) => name !== "report")
    .map(([name, r]) => `<a href="${r.href}" target="_blank">${escapeHtml(name)}</a>`)
    .join(" ");
  const report = results.report ? `<pre>${escapeHtml(results.report)}</pre>` : "";
  form.querySelector(".job-results").innerHTML = links + report;
}

/** The data path of a finished job's output folder or file (an input of a following job). */
export function outputPath(jobId, inputs, name) {
  return `jobs/${jobId}/results/${inputs[name] || name}`;
}

/**
 * Run a tool as a job and wait for it (for buttons that need no form).
 * @param {string} processId e.g. "detect_objects"
 * @param {object} inputs the job's inputs
 * @param {Function} [onStatus] called with each polled job status
 * @returns {Promise<{job: object, results: object}>} rejects with the job's message if it fails
 */
export async function runJob(processId, inputs, onStatus) {
  const { data } = await request(`/processes/${processId}/execution`, {
    method: "POST",
    body: { inputs },
    headers: { Prefer: "respond-async" },
  });
  for (;;) {
    const job = await getJSON(`/jobs/${data.jobID}`);
    if (onStatus) onStatus(job);
    if (job.status === "successful") {
      return { job, results: await getJSON(`/jobs/${data.jobID}/results`) };
    }
    if (job.status === "failed" || job.status === "dismissed") {
      throw new Error(`${processId} ${job.status}: ${job.message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

export { escapeHtml };
