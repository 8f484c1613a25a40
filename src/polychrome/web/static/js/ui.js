// Small DOM helpers shared by the pages (no framework).
import { fetchBlob, getKey, imageSrc } from "./api.js";

let counter = 0;
export function uid(prefix = "id") {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** h("button", {class: "x", onclick: fn, "aria-label": "..."}, "text", child) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A labelled control: <div class=field><label for>…</label>control<small>hint</small></div> */
export function field(label, control, hint) {
  if (!control.id) control.id = uid("f");
  const parts = [h("label", { for: control.id }, label), control];
  if (hint) {
    const hid = uid("hint");
    control.setAttribute("aria-describedby", hid);
    parts.push(h("small", { class: "hint", id: hid }, hint));
  }
  return h("div", { class: "field" }, ...parts);
}

/** An error line that screen readers announce; put it next to the control it is about. */
export function errorBox() {
  return h("p", { class: "error", role: "alert", "aria-live": "assertive" });
}

export function showError(box, err) {
  if (!box) return;
  if (err && err.name === "AbortError") return;
  const msg = err && err.message ? err.message : String(err);
  box.textContent = msg;
  box.dataset.code = (err && err.code) || "";
}

export function clearError(box) {
  if (box) {
    box.textContent = "";
    delete box.dataset.code;
  }
}

export function status(text = "") {
  return h("p", { class: "status", role: "status", "aria-live": "polite" }, text);
}

export function debounce(fn, ms) {
  let t = null;
  const wrapped = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(t);
  return wrapped;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "unknown";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${m % 60} min`;
  return `${Math.round(hrs / 24)} days`;
}

export function randomSeed() {
  const a = new Uint32Array(1);
  crypto.getRandomValues(a);
  return a[0] % 2147483647;
}

/** A seed input with a dice button. Returns {el, input}. */
export function seedField(label = "Seed", value = 0) {
  const input = h("input", { type: "number", min: "0", max: "2147483646", step: "1", value: String(value), inputmode: "numeric" });
  input.id = uid("seed");
  const dice = h("button", {
    type: "button", class: "secondary icon", "aria-label": "Random seed", title: "Random seed",
    onclick: () => { input.value = String(randomSeed()); input.dispatchEvent(new Event("change", { bubbles: true })); },
  }, "Random");
  const el = h("div", { class: "field" }, h("label", { for: input.id }, label), h("div", { class: "row" }, input, dice));
  return { el, input, dice };
}

/** A range slider with its value shown. Returns {el, input, output}. */
export function slider(label, { min = 0, max = 1, step = 0.05, value = 1 } = {}) {
  const input = h("input", { type: "range", min: String(min), max: String(max), step: String(step), value: String(value) });
  input.id = uid("range");
  const output = h("output", { for: input.id }, String(value));
  input.addEventListener("input", () => { output.textContent = input.value; });
  const el = h("div", { class: "field" }, h("label", { for: input.id }, label, " ", output), input);
  return { el, input, output };
}

/**
 * A drop zone around a real file input. onFiles(list of {file, path}) gets relative paths
 * for dropped folders (DataTransferItem.webkitGetAsEntry) and webkitdirectory picks.
 */
export function dropZone({ label, accept = "", multiple = false, directory = false, onFiles }) {
  const input = h("input", { type: "file", accept: accept || undefined, multiple: multiple || undefined });
  input.id = uid("file");
  if (directory) {
    input.webkitdirectory = true;
    input.multiple = true;
  }
  const zone = h("label", { class: "drop", for: input.id }, h("span", {}, label), input);
  input.addEventListener("change", () => {
    const files = [...input.files].map((f) => ({ file: f, path: f.webkitRelativePath || f.name }));
    if (files.length) onFiles(files);
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = await droppedFiles(e.dataTransfer);
    if (files.length) onFiles(multiple ? files : files.slice(0, 1));
  });
  return { el: zone, input };
}

async function droppedFiles(dt) {
  const entries = [...(dt.items || [])]
    .map((it) => (it.webkitGetAsEntry ? it.webkitGetAsEntry() : null))
    .filter(Boolean);
  if (!entries.length) return [...dt.files].map((f) => ({ file: f, path: f.name }));
  const out = [];
  for (const entry of entries) await walk(entry, "", out);
  return out;
}

async function walk(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    out.push({ file, path: prefix + entry.name });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    // readEntries answers in chunks: call it until it returns nothing.
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      for (const child of batch) await walk(child, `${prefix}${entry.name}/`, out);
    }
  }
}

/** Fill a <select> with models; returns how many matched. */
export function fillModels(select, models, filter = () => true, selected = "") {
  select.replaceChildren();
  const ok = models.filter(filter);
  for (const m of ok) {
    const opt = h("option", { value: m.name }, `${m.name} (${m.arch}, v${m.latest_version})`);
    if (m.name === selected) opt.selected = true;
    select.append(opt);
  }
  return ok.length;
}

/** Parse "#/page?a=1&b=2" -> {page, params}. */
export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [page, query = ""] = raw.split("?");
  return { page: page || "create", params: new URLSearchParams(query) };
}

export function metaTable(meta) {
  const rows = Object.entries(meta).filter(([k]) => k !== "recipe")
    .map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, String(v))));
  const table = h("table", {}, h("tbody", {}, ...rows));
  const parts = [h("div", { class: "scroll" }, table)];
  if (meta.recipe) {
    let pretty = meta.recipe;
    try { pretty = JSON.stringify(JSON.parse(meta.recipe), null, 2); } catch { /* keep raw */ }
    parts.push(h("details", {}, h("summary", {}, "Recipe (everything that defines this image)"), h("pre", {}, pretty)));
  }
  return h("div", {}, ...parts);
}

/** An <img> of an API image (fetched with the key when one is set). */
export function apiImg(path, alt, attrs = {}) {
  const img = h("img", { alt, ...attrs });
  imageSrc(path).then((src) => { img.src = src; }, () => { img.alt = `${alt} (could not load)`; });
  return img;
}

/** A download link for an API file; with a key the file is fetched first (headers). */
export function downloadLink(path, filename, text = "Download") {
  if (!getKey()) return h("a", { class: "button secondary", href: path, download: filename }, text);
  return h("button", {
    type: "button", class: "secondary",
    onclick: async () => {
      const url = URL.createObjectURL(await fetchBlob(path));
      const a = h("a", { href: url, download: filename, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    },
  }, text);
}

/**
 * "Upscale" for the cascade (`upscale` on /api/generate, /api/restyle, full renders): ×2 / ×4,
 * each enabled only when a super-resolution model trained for that factor is registered.
 * Returns {el, select, setModels(list from /api/models), value() -> 2 | 4 | null}.
 */
export function upscaleField() {
  const select = h("select", {}, h("option", { value: "" }, "No"));
  const el = field("Upscale", select, " ");
  const hint = el.querySelector(".hint");
  function setModels(models) {
    const sr = models.filter((m) => m.family === "restoration" && m.task === "sr");
    select.replaceChildren(h("option", { value: "" }, "No"), ...[2, 4].map((f) => {
      const ok = sr.some((m) => (m.scales || []).includes(f));
      return h("option", { value: String(f), disabled: !ok || undefined }, ok ? `×${f}` : `×${f} (no model)`);
    }));
    select.disabled = !sr.length;
    hint.textContent = sr.length
      ? "Hand the result to a super-resolution model: a picture 2 or 4 times larger."
      : "Needs a super-resolution model: train pix2pix with the task Super-resolution.";
  }
  setModels([]);
  return { el, select, setModels, value: () => (select.value ? parseInt(select.value, 10) : null) };
}
