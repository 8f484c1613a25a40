// The REST API, as the page uses it: the same routes any client calls.
// Errors come back as {"error": {"code", "message"}}; they become ApiError.

const KEY_STORAGE = "polychrome.apiKey";

// The safe decoder's reasons for refusing a picture (ImageRejected codes).
export const PICTURE_REFUSED = ["corrupt", "unsupported", "too_large", "too_small", "unsafe"];

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch { /* private mode: the key lasts for this page only */ }
}

// Listeners for 401s, so the page can point at the key field.
const authListeners = new Set();
export function onUnauthorized(fn) { authListeners.add(fn); }

function withKey(headers) {
  const h = new Headers(headers || {});
  const key = getKey();
  if (key) h.set("X-API-Key", key);
  return h;
}

/** fetch() with the key, a JSON or FormData body, and API errors as ApiError. */
export async function request(path, { method = "GET", json, form, signal, headers } = {}) {
  const init = { method, headers: withKey(headers), signal };
  if (json !== undefined) {
    init.headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form; // the browser sets the multipart boundary
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", `cannot reach the server (${e.message})`);
  }
  if (!res.ok) {
    let code = `http_${res.status}`;
    let message = res.statusText || `HTTP ${res.status}`;
    try {
      const body = await res.json();
      if (body && body.error) {
        code = body.error.code;
        message = body.error.message;
      }
    } catch { /* not JSON: keep the status text */ }
    if (res.status === 401) authListeners.forEach((fn) => fn(message));
    throw new ApiError(res.status, code, message);
  }
  return res;
}

export async function getJSON(path, opts) {
  return (await request(path, opts)).json();
}

export async function postJSON(path, body, opts = {}) {
  return (await request(path, { ...opts, method: "POST", json: body })).json();
}

/** POST returning an image: {blob, url (object URL), headers}. */
export async function postImage(path, { json, form, signal } = {}) {
  const res = await request(path, { method: "POST", json, form, signal });
  const blob = await res.blob();
  return { blob, url: URL.createObjectURL(blob), headers: res.headers, type: res.headers.get("content-type") || "" };
}

/** An <img> source for an API image. With a key the image is fetched (headers) as a blob. */
export async function imageSrc(path) {
  if (!getKey()) return path;
  const res = await request(path);
  return URL.createObjectURL(await res.blob());
}

/** A Blob of an API file (downloads keep the PNG's metadata chunks untouched). */
export async function fetchBlob(path) {
  return (await request(path)).blob();
}

/** EventSource cannot send headers: the events route alone accepts ?key=. */
export function events(path) {
  const key = getKey();
  const url = key ? `${path}${path.includes("?") ? "&" : "?"}key=${encodeURIComponent(key)}` : path;
  return new EventSource(url);
}

export function imageName(meta, fallback = "polychrome") {
  const parts = [meta.model || fallback, meta.op || "", meta.style || "", meta.seed ? `seed${meta.seed}` : ""];
  return parts.filter(Boolean).join("-").replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 100) + ".png";
}

/** Open a live restyle session: the picture's content is encoded once on the server. */
export async function openRestyleSession(model, blob, name) {
  const form = new FormData();
  form.append("model", model);
  form.append("image", blob, name);
  return (await request("/api/restyle/sessions", { method: "POST", form })).json();
}

/** Add a reference picture to a session: {reference: id} to render with. */
export async function addSessionReference(sessionId, file) {
  const form = new FormData();
  form.append("reference", file, file.name);
  return (await request(`/api/restyle/sessions/${sessionId}/references`, { method: "POST", form })).json();
}
