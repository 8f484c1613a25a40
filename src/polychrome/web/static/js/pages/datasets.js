// Datasets: upload a folder (one sub-folder per style) or an archive, follow the import,
// then read the cleaning report, the per-style counts and the preview grid.
import { getJSON, request } from "../api.js";
import { watchJob } from "../jobs.js";
import { apiImg, clearError, dropZone, errorBox, field, h, showError, status } from "../ui.js";

const ARCHIVE = /\.(zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$/i;

export function mount(root, params) {
  let files = []; // {file, path}
  let stop = null;

  const name = h("input", { type: "text", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}", placeholder: "e.g. emoji", autocomplete: "off" });
  const folder = dropZone({ label: "Drop a folder here (one sub-folder per style), or choose a folder", directory: true, multiple: true, onFiles: (f) => setFiles(f) });
  const loose = dropZone({ label: "…or choose image files / one archive (.zip, .tar.gz)", accept: "image/*,.zip,.tar,.tgz,.gz,.bz2,.xz", multiple: true, onFiles: (f) => setFiles(f) });
  const picked = status("No files chosen.");
  const upload = h("button", { type: "submit" }, "Upload and import");
  const upErr = errorBox();
  const bar = h("progress", { max: "1", value: "0", hidden: true, "aria-label": "Import progress" });
  const jobNote = status();
  const list = h("div", { class: "scroll" });
  const listErr = errorBox();
  const detail = h("section", { "aria-live": "polite", "aria-label": "Dataset details" });

  const form = h("form", { class: "panel", onsubmit: (e) => { e.preventDefault(); send(); } },
    h("h2", {}, "Import a dataset"),
    field("Name", name, "Letters, digits, . _ - (a new version if the name exists)."),
    folder.el, loose.el, picked, h("div", { class: "row" }, upload), upErr, bar, jobNote);
  root.append(h("h1", {}, "Datasets"), h("div", { class: "cols" },
    h("div", {}, form, h("section", { class: "panel" }, h("h2", {}, "Your datasets"), listErr, list)),
    detail));

  // A picked folder arrives as "root/style/file.png": the server wants "style/file.png".
  function setFiles(list) {
    clearError(upErr);
    const parts = list.map((f) => f.path.split("/"));
    const tops = new Set(parts.map((p) => p[0]));
    const strip = tops.size === 1 && parts.every((p) => p.length >= 3);
    files = list.map((f, i) => ({ file: f.file, path: strip ? parts[i].slice(1).join("/") : f.path }))
      .filter((f) => !f.path.split("/").some((p) => p.startsWith(".")));
    const styles = new Set(files.map((f) => (f.path.includes("/") ? f.path.split("/")[0] : "(no folder)")));
    const archive = files.length === 1 && ARCHIVE.test(files[0].file.name);
    picked.textContent = archive ? `Archive: ${files[0].file.name}` : `${files.length} file(s) in ${styles.size} style folder(s): ${[...styles].slice(0, 8).join(", ")}`;
    if (!name.value && strip) name.value = [...tops][0].replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 64);
  }

  async function send() {
    clearError(upErr);
    if (!name.value.trim()) { showError(upErr, new Error("give the dataset a name")); name.focus(); return; }
    if (!files.length) { showError(upErr, new Error("choose a folder, image files or an archive first")); return; }
    const body = new FormData();
    body.append("name", name.value.trim());
    for (const f of files) body.append("files", f.file, f.path);
    upload.disabled = true;
    jobNote.textContent = `Uploading ${files.length} file(s)…`;
    try {
      const job = await (await request("/api/datasets", { method: "POST", form: body })).json();
      follow(job, name.value.trim());
    } catch (e) {
      jobNote.textContent = "";
      showError(upErr, e);
      upload.disabled = false;
    }
  }

  function follow(job, dsName) {
    bar.hidden = false;
    bar.value = 0;
    jobNote.textContent = "Importing: checking every image…";
    if (stop) stop();
    stop = watchJob(job.id, {
      progress: (p) => {
        if (p.total) { bar.max = p.total; bar.value = p.step; }
        jobNote.textContent = p.total ? `Importing: ${p.step} / ${p.total} files` : "Importing…";
      },
      end: (j) => {
        upload.disabled = false;
        bar.hidden = true;
        if (j.state === "succeeded") {
          jobNote.textContent = `Imported ${j.result.images} image(s) into ${dsName} v${j.result.version}.`;
          refresh();
          show(dsName);
        } else {
          jobNote.textContent = "";
          showError(upErr, new Error(j.error ? j.error.message : `import ${j.state}`));
        }
      },
      error: (e) => { upload.disabled = false; showError(upErr, e); },
    });
  }

  async function refresh() {
    clearError(listErr);
    try {
      const items = (await getJSON("/api/datasets")).items;
      if (!items.length) { list.replaceChildren(h("p", { class: "empty" }, "None yet.")); return; }
      list.replaceChildren(h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", { class: "num" }, "Images"), h("th", {}, "Styles"), h("th", {}, ""))),
        h("tbody", {}, ...items.map((d) => h("tr", {},
          h("td", {}, `${d.name} v${d.latest_version}`),
          h("td", { class: "num" }, String(d.images)),
          h("td", {}, Object.keys(d.domains || {}).join(", ")),
          h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => show(d.name) }, "Details")))))));
    } catch (e) { showError(listErr, e); }
  }

  async function show(dsName) {
    const err = errorBox();
    detail.replaceChildren(h("div", { class: "panel" }, h("h2", {}, `Dataset ${dsName}`), err));
    try {
      const [info, report] = await Promise.all([
        getJSON(`/api/datasets/${encodeURIComponent(dsName)}`),
        getJSON(`/api/datasets/${encodeURIComponent(dsName)}/report`),
      ]);
      const panel = detail.firstChild;
      panel.append(h("p", {}, `Version ${info.version} · ${info.images} images · created ${info.created} · from ${info.source}`));
      panel.append(h("h3", {}, "Images per style"), h("table", {}, h("tbody", {},
        ...Object.entries(info.domains).map(([s, n]) => h("tr", {}, h("th", { scope: "row" }, s), h("td", { class: "num" }, String(n)))))));
      panel.append(h("h3", {}, "Cleaning report"), reportView(report.items));
      panel.append(h("h3", {}, "Preview"), apiImg(`/api/datasets/${encodeURIComponent(dsName)}/preview.png?per_domain=8&version=${info.version}`, `Preview grid of ${dsName}, a row per style`, { class: "grid-img" }));
    } catch (e) { showError(err, e); }
  }

  function reportView(items) {
    const counts = {};
    for (const it of items) counts[it.status] = (counts[it.status] || 0) + 1;
    const dropped = items.filter((it) => it.status !== "imported");
    const summary = h("p", { class: "report-summary" }, Object.entries(counts).map(([k, v]) => `${k}: ${v}`).join(" · ") || "empty");
    if (!dropped.length) return h("div", {}, summary, h("p", { class: "ok" }, "Nothing was dropped."));
    return h("div", {}, summary, h("p", {}, `${dropped.length} file(s) dropped, and why:`),
      h("div", { class: "scroll" }, h("table", { class: "dropped" },
        h("thead", {}, h("tr", {}, h("th", {}, "File"), h("th", {}, "Style"), h("th", {}, "Reason"), h("th", {}, "Detail"))),
        h("tbody", {}, ...dropped.slice(0, 500).map((it) => h("tr", {},
          h("td", {}, it.source_name), h("td", {}, it.domain || ""), h("td", {}, it.status), h("td", {}, it.detail || "")))))));
  }

  refresh();
  if (params.get("name")) show(params.get("name"));
  return () => { if (stop) stop(); };
}
