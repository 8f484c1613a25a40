// Models: each model's styles, sample grid, model card (measured metrics), versions.
import { getJSON } from "../api.js";
import { listModels, showModel } from "../state.js";
import { headline, metricsView } from "../metrics.js";
import { apiImg, errorBox, h, showError } from "../ui.js";

export function mount(root, params) {
  const listErr = errorBox();
  const list = h("div", { class: "grid models", "aria-label": "Models" });
  const detail = h("section", { "aria-live": "polite", "aria-label": "Model details" });
  root.append(h("h1", {}, "Models"), listErr, list, detail);

  async function load() {
    try {
      const models = await listModels();
      if (!models.length) {
        list.replaceChildren(h("p", { class: "empty" }, "No models yet: train one on the Train page."));
        return;
      }
      list.replaceChildren(...models.map((m) => h("article", { class: "card model", dataset: { name: m.name } },
        h("h2", {}, m.name),
        h("p", { class: "caption" }, `${m.arch} · ${kind(m)} · v${m.latest_version}`),
        m.family === "restoration" ? null : h("div", { class: "chips" }, ...m.styles.map((s) => h("span", { class: "chip" }, s))),
        h("div", { class: "actions" },
          h("button", { type: "button", class: "secondary", onclick: () => show(m.name) }, "Details"),
          action(m)))));
      const wanted = params.get("name");
      if (wanted) show(wanted);
    } catch (e) { showError(listErr, e); }
  }

  function kind(m) {
    if (m.family === "noise") return "noise → image";
    if (m.family !== "restoration") return "image → image";
    const task = { sr: "super-resolution", inpaint: "inpainting", colorize: "colorization" }[m.task] || "restoration";
    return m.task === "sr" ? `${task} ${(m.scales || []).map((s) => `×${s}`).join(" ")}` : task;
  }

  function action(m) {
    if (m.family === "noise") return h("a", { class: "button secondary", href: `#/create?model=${encodeURIComponent(m.name)}` }, "Create");
    if (m.family === "restoration") return h("a", { class: "button secondary", href: `#/restore?model=${encodeURIComponent(m.name)}` }, "Restore");
    return h("a", { class: "button secondary", href: "#/restyle" }, "Restyle");
  }

  async function show(name) {
    const err = errorBox();
    const panel = h("div", { class: "panel" }, h("h2", {}, `Model ${name}`), err);
    detail.replaceChildren(panel);
    try {
      const m = await showModel(name);
      panel.append(h("p", {}, `${m.arch} (${m.family}) · version ${m.version} of ${m.latest_version}`),
        h("h3", {}, "Styles"), h("div", { class: "chips" }, ...m.styles.map((s) => h("span", { class: "chip" }, s))));
      if (m.family === "noise") {
        panel.append(h("h3", {}, "Samples (a row per style, seeds 0–7)"),
          apiImg(`/api/models/${encodeURIComponent(name)}/samples.png?cols=8`, `Sample grid of ${name}`, { class: "grid-img scaled" }));
      }
      const measured = Object.keys(m.metrics || {}).length;
      panel.append(h("h3", {}, "Measured metrics"), measured
        ? metricsView(m.metrics, m.styles)
        : h("p", { class: "empty" }, "None measured yet (run an eval job: POST /api/jobs kind eval)."));
      panel.append(h("h3", {}, "Versions"), h("div", { class: "scroll" }, h("table", { class: "versions" },
        h("thead", {}, h("tr", {}, h("th", {}, "Version"), h("th", {}, "Created"), h("th", {}, "Styles"), h("th", {}, "Metrics"))),
        h("tbody", {}, ...m.versions.map((v) => h("tr", {},
          h("td", {}, String(v.version)), h("td", {}, formatDate(v.created)), h("td", {}, v.styles.join(", ")),
          h("td", {}, headline(v.metrics || {}))))))));
      panel.append(h("h3", {}, "Model card"), h("pre", { class: "model-card" }, m.card || "(no card)"));
      await runInfo(panel, m);
    } catch (e) { showError(err, e); }
  }

  // Training time and data of the latest version, when a job of this page made it.
  async function runInfo(panel, m) {
    try {
      const jobs = (await getJSON("/api/jobs?kind=train&state=succeeded&limit=100")).items;
      const job = jobs.find((j) => j.result && j.result.model && j.result.model.name === m.name && j.result.model.version === m.version);
      if (!job) return;
      const secs = (Date.parse(job.finished) - Date.parse(job.started)) / 1000;
      panel.append(h("h3", {}, "Training"), h("p", {},
        `Dataset ${job.params.config.dataset} · ${job.result.steps} steps · ${isFinite(secs) ? Math.round(secs) + " s" : "?"} of training · ${job.result.images_per_second} images/s`));
    } catch { /* optional */ }
  }

  load();
}

// "2026-03-01 14:05" from the store's ISO time (seconds and fractions add nothing here).
function formatDate(iso) {
  return String(iso ?? "").replace("T", " ").slice(0, 16);
}
