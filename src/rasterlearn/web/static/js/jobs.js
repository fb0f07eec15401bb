// The jobs page: every job of the caller (OGC API - Processes /jobs) with its status, progress,
// log, results, and a button to cancel it (queued or running) or dismiss it (finished: its
// results are deleted). Refreshed every POLL_MS.

import { getJSON, request, setStatus } from "./api.js";
import { escapeHtml } from "./tools.js";

const POLL_MS = 1500;
const ACTIVE = ["accepted", "running"];

class JobsPage {
  constructor(titles) {
    this.titles = titles;
    this.logs = new Map(); // job id -> log text, for the jobs whose log is open
    this.results = new Map(); // job id -> results document, once successful
    this.jobs = [];
    document.querySelector("#jobs tbody").addEventListener("click", (e) => this.clicked(e));
  }

  async refresh() {
    const { jobs } = await getJSON("/jobs");
    this.jobs = jobs.reverse(); // newest first
    const fetching = [];
    for (const job of this.jobs) {
      if (job.status === "successful" && !this.results.has(job.jobID)) {
        fetching.push(
          getJSON(`/jobs/${job.jobID}/results`).then((r) => this.results.set(job.jobID, r)),
        );
      }
      if (this.logs.has(job.jobID) && (ACTIVE.includes(job.status) || !this.logs.get(job.jobID))) {
        fetching.push(this.loadLog(job.jobID));
      }
    }
    await Promise.all(fetching);
    this.render();
  }

  async loadLog(id) {
    const { data } = await request(`/jobs/${id}/log`);
    this.logs.set(id, data || "(no output yet)");
  }

  render() {
    const active = this.jobs.filter((j) => ACTIVE.includes(j.status)).length;
    document.getElementById("jobs-count").textContent =
      `${this.jobs.length} jobs, ${active} queued or running`;
    document.querySelector("#jobs tbody").innerHTML = this.jobs
      .map((job) => this.row(job))
      .join("");
  }

  row(job) {
    const id = job.jobID;
    const when = job.created ? new Date(job.created).toLocaleString() : "";
    const action = ACTIVE.includes(job.status)
      ? `<button data-action="cancel" title="Stop the job; nothing is kept">Cancel</button>`
      : job.status === "dismissed"
        ? ""
        : `<button data-action="dismiss" title="Delete the job's results">Dismiss</button>`;
    const open = this.logs.has(id);
    const results = Object.entries(this.results.get(id) || {})
      .filter(([name]) => name !== "report")
      .map(([name, r]) => `<a href="${r.href}" target="_blank">${escapeHtml(name)}</a>`)
      .join(" ");
    const log = open
      ? `<tr class="log-row" data-log="${id}"><td colspan="6"><pre>${escapeHtml(this.logs.get(id))}</pre></td></tr>`
      : "";
    return (
      `<tr data-job="${id}" data-status="${job.status}"><td>${escapeHtml(when)}</td>` +
      `<td title="${id}">${escapeHtml(this.titles[job.processID] || job.processID)}</td>` +
      `<td class="status">${job.status}</td>` +
      `<td><progress max="100" value="${job.progress || 0}"></progress> ` +
      `<span class="message">${escapeHtml(job.message)}</span></td>` +
      `<td><button data-action="log">${open ? "Hide log" : "Log"}</button> ${action}</td>` +
      `<td class="results">${results}</td></tr>${log}`
    );
  }

  async clicked(event) {
    const action = event.target.dataset.action;
    const row = event.target.closest("tr[data-job]");
    if (!action || !row) return;
    const id = row.dataset.job;
    try {
      if (action === "log") {
        if (this.logs.has(id)) this.logs.delete(id);
        else await this.loadLog(id);
        this.render();
      } else {
        await request(`/jobs/${id}`, { method: "DELETE" });
        setStatus(action === "cancel" ? `job ${id} cancelled` : `job ${id} dismissed`, "ok");
        await this.refresh();
      }
    } catch (err) {
      setStatus(err.message, "error");
    }
  }
}

async function main() {
  const { processes } = await getJSON("/processes");
  const page = new JobsPage(Object.fromEntries(processes.map((p) => [p.id, p.title])));
  window.rasterlearn = { page };
  await page.refresh();
  setStatus("jobs of this service (refreshed every few seconds)", "ok");
  document.body.dataset.ready = "true";
  const poll = async () => {
    try {
      await page.refresh();
    } catch (err) {
      setStatus(err.message, "error");
    }
    setTimeout(poll, POLL_MS);
  };
  setTimeout(poll, POLL_MS);
}

main().catch((err) => setStatus(err.message, "error"));
