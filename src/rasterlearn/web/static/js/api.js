// The service's REST API as the pages use it: JSON requests with the API key, one-line errors.

const KEY_ITEM = "rasterlearn.apiKey";

/** The page's query parameters (what a page shows: ?raster=files/scene.tif&samples=...). */
export const query = new URLSearchParams(window.location.search);

/** An HTTP error with the service's one-line message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Headers carrying the API key, when the user gave one (a service with --api-keys). */
export function authHeaders(extra = {}) {
  const key = window.sessionStorage.getItem(KEY_ITEM);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

/** Ask for an API key (after a 401/403) and keep it for this tab. */
export function askForKey() {
  const key = window.prompt("This service needs an API key:");
  if (key) window.sessionStorage.setItem(KEY_ITEM, key.trim());
  return Boolean(key);
}

async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    return body.detail || (body.error && body.error.message) || body.title || text;
  } catch {
    return text || response.statusText;
  }
}

/**
 * A request to the service: JSON in and out.
 * @param {string} path e.g. "/imagery/info?raster=files/scene.tif"
 * @param {{method?: string, body?: any, headers?: object}} options
 * @returns {Promise<{data: any, response: Response}>}
 */
export async function request(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: authHeaders(headers) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    if ((response.status === 401 || response.status === 403) && askForKey()) {
      return request(path, { method, body, headers });
    }
    throw new ApiError(response.status, await errorMessage(response));
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  return { data, response };
}

/** GET a JSON document. */
export async function getJSON(path) {
  return (await request(path)).data;
}

/** A URL path with query parameters. */
export function withQuery(path, params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

/** Show a one-line message in the page's status bar (kind: "info", "ok", "error"). */
export function setStatus(text, kind = "info") {
  const bar = document.getElementById("status");
  if (!bar) return;
  bar.textContent = text;
  bar.dataset.kind = kind;
}
