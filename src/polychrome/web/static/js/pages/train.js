// Train: dataset + architecture + preset (with a time estimate measured on this machine),
// then a live view of the job: progress and ETA, loss curves, sample grids, cancel, and
// retry (a failed or cancelled job resumes from its last checkpoint).
import { getJSON, postJSON, request } from "../api.js";
import { LineChart } from "../chart.js";
import { watchJob } from "../jobs.js";
import { apiImg, clearError, errorBox, field, formatDuration, h, showError, status } from "../ui.js";

export function mount(root, params) {
  let presets = [];
  let stop = null;

  const dsSel = h("select", {});
  const archSel = h("select", {});
  const archNote = h("p", { class: "hint" });
  const presetBox = h("div", { class: "presets", role: "radiogroup", "aria-label": "Preset" });
  const estBtn = h("button", { type: "button", class: "secondary", onclick: () => measure() }, "Measure time on this machine");
  const estOut = status("Time: not measured yet.");
  const estErr = errorBox();
  const steps = h("input", { type: "number", min: "1", step: "1", placeholder: "preset" });
  const resolution = h("input", { type: "number", min: "8", max: "1024", step: "8", placeholder: "preset" });
  const batch = h("input", { type: "number", min: "1", max: "4096", placeholder: "preset" });
  const seed = h("input", { type: "number", min: "0", placeholder: "0" });
  const modelName = h("input", { type: "text", placeholder: "<dataset>-<architecture>", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}" });
  // Restoration (pix2pix): what it learns, the sr factor(s), and the crop it trains on.
  const taskSel = h("select", {},
    h("option", { value: "sr" }, "Super-resolution"), h("option", { value: "inpaint" }, "Inpainting"),
    h("option", { value: "colorize" }, "Colorization"));
  const scales = h("input", { type: "text", value: "2,4", inputmode: "numeric", spellcheck: "false" });
  const scalesField = field("Scale", scales, "Upscaling factor(s): 2, 3, 4 or 8; several with commas train one network for each (e.g. 2,4).");
  const crop = h("input", { type: "number", min: "16", max: "1024", step: "1", value: "64" });
  const restoration = h("fieldset", { hidden: true }, h("legend", {}, "Restoration"),
    field("Task", taskSel), scalesField,
    field("Crop size (px)", crop, "Trains on random crops of this side (a power of two), the pictures kept near their own size."));
  const start = h("button", { type: "submit" }, "Start training");
  const startErr = errorBox();
  const formErr = errorBox();
  const jobView = h("section", { class: "panel", "aria-label": "Training job", hidden: true });
  const recent = h("div", { class: "scroll" });

  const form = h("form", { class: "panel", onsubmit: (e) => { e.preventDefault(); startJob(); } },
    field("Dataset", dsSel), field("Model family", archSel), archNote, restoration,
    h("fieldset", {}, h("legend", {}, "Preset"), presetBox),
    h("div", { class: "row" }, estBtn), estOut, estErr,
    h("details", {}, h("summary", {}, "Advanced"),
      field("Steps", steps), field("Resolution (px)", resolution), field("Batch size", batch),
      field("Seed", seed), field("Model name", modelName, "The finished model is registered under this name.")),
    h("div", { class: "row" }, start), startErr, formErr);
  root.append(h("h1", {}, "Train"), h("div", { class: "cols" }, form,
    h("div", {}, jobView, h("section", { class: "panel" }, h("h2", {}, "Recent training jobs"), recent))));

  archSel.addEventListener("change", () => loadPresets());
  taskSel.addEventListener("change", () => { scalesField.hidden = taskSel.value !== "sr"; });
  for (const el of [dsSel, steps, resolution, batch, taskSel, scales, crop]) el.addEventListener("change", () => { estOut.textContent = "Time: not measured yet."; });

  async function load() {
    try {
      const [ds, archs] = await Promise.all([getJSON("/api/datasets"), getJSON("/api/architectures")]);
      dsSel.replaceChildren(...ds.items.map((d) => h("option", { value: d.name }, `${d.name} (${d.images} images, ${Object.keys(d.domains || {}).length} styles)`)));
      if (!ds.items.length) {
        formErr.replaceChildren("No dataset yet: ", h("a", { href: "#/datasets" }, "import one"), " first.");
        start.disabled = true;
      }
      const labels = { noise: "Noise → image (Create, Blend)", translation: "Image → image (Restyle, Blend)", restoration: "Restoration (Restore)" };
      for (const fam of ["noise", "translation", "restoration"]) {
        const group = h("optgroup", { label: labels[fam] });
        for (const a of archs.items.filter((x) => x.family === fam)) group.append(h("option", { value: a.name, dataset: { desc: a.description, family: fam } }, a.name));
        if (group.children.length) archSel.append(group);
      }
      archSel.value = params.get("model") || "dcgan";
      if (!archSel.value && archSel.options.length) archSel.selectedIndex = 0;
      await loadPresets();
    } catch (e) { showError(formErr, e); }
    listRecent();
  }

  const isRestoration = () => archSel.selectedOptions[0]?.dataset.family === "restoration";

  /** Restoration models: their run-config overrides (model_config task / scales, crop). */
  function restorationConfig() {
    if (!isRestoration()) return null;
    const model_config = { task: taskSel.value };
    if (taskSel.value === "sr") {
      const parts = scales.value.split(",").map((x) => x.trim()).filter(Boolean);
      if (!parts.length || parts.some((x) => !/^[0-9]+$/.test(x))) throw new Error("the scale must be whole numbers, e.g. 4 or 2,4");
      model_config.scales = parts.map((x) => parseInt(x, 10));
    }
    const side = parseInt(crop.value, 10);
    if (!Number.isInteger(side)) throw new Error("the crop size must be a whole number of pixels, e.g. 64");
    return { crop: side, model_config };
  }

  async function loadPresets() {
    const opt = archSel.selectedOptions[0];
    archNote.textContent = opt ? opt.dataset.desc || "" : "";
    restoration.hidden = !isRestoration();
    resolution.closest(".field").hidden = isRestoration(); // the crop size sets it
    try {
      presets = (await getJSON(`/api/presets?model=${encodeURIComponent(archSel.value)}`)).items;
    } catch (e) { showError(formErr, e); return; }
    const current = presetBox.querySelector("input:checked")?.value || "quick";
    presetBox.replaceChildren(...presets.map((p) => h("label", {},
      h("input", { type: "radio", name: "preset", value: p.name, checked: p.name === current }),
      ` ${p.label} — ${p.steps.toLocaleString()} steps` + (isRestoration() ? "" : `, ${p.resolution} px`),
      h("br"), h("small", { class: "hint" }, p.description))));
    presetBox.querySelectorAll("input").forEach((i) => i.addEventListener("change", () => { estOut.textContent = "Time: not measured yet."; }));
    estOut.textContent = "Time: not measured yet.";
  }

  function preset() {
    const name = presetBox.querySelector("input:checked")?.value || "quick";
    return presets.find((p) => p.name === name) || presets[0];
  }
  const num = (el) => (el.value.trim() === "" ? null : parseInt(el.value, 10));

  async function measure() {
    clearError(estErr);
    estBtn.disabled = true;
    estOut.textContent = "Measuring: training a few steps of this exact configuration…";
    try {
      const body = { model: archSel.value, dataset: dsSel.value, preset: preset().name };
      for (const [k, el] of [["steps", steps], ["resolution", resolution], ["batch_size", batch]]) if (num(el) !== null) body[k] = num(el);
      const extra = restorationConfig();
      if (extra) { body.config = extra; delete body.resolution; }
      const e = await postJSON("/api/presets/estimate", body);
      estOut.textContent = `About ${formatDuration(e.estimated_seconds)} for ${e.steps.toLocaleString()} steps on this machine (${e.basis}).`;
    } catch (e) {
      estOut.textContent = "Time: not measured.";
      showError(estErr, e);
    } finally { estBtn.disabled = false; }
  }

  async function startJob() {
    clearError(startErr);
    const p = preset();
    if (!p) { showError(startErr, new Error("choose a preset")); return; }
    const total = num(steps) || p.steps;
    const config = { ...p.config, sample_every: Math.max(1, Math.floor(total / 10)), checkpoint_every: Math.max(1, Math.floor(total / 5)), log_every: Math.max(1, Math.min(10, Math.floor(total / 50))) };
    let extra = null;
    try { extra = restorationConfig(); } catch (e) { showError(startErr, e); return; }
    if (extra) {
      config.crop = extra.crop;
      config.model_config = { ...(config.model_config || {}), ...extra.model_config };
    }
    const body = { kind: "train", model: archSel.value, dataset: dsSel.value, steps: total, resolution: extra ? extra.crop : num(resolution) || p.resolution, batch_size: num(batch) || p.batch_size, config };
    if (num(seed) !== null) body.seed = num(seed);
    if (modelName.value.trim()) body.name = modelName.value.trim();
    start.disabled = true;
    try {
      const job = await postJSON("/api/jobs", body);
      follow(job);
      listRecent();
    } catch (e) { showError(startErr, e); } finally { start.disabled = false; }
  }

  function follow(job) {
    if (stop) stop();
    jobView.hidden = false;
    const title = h("h2", {}, `Training ${job.params?.config?.model || ""} on ${job.params?.config?.dataset || ""}`);
    const stateLine = status(`State: ${job.state}`);
    const bar = h("progress", { max: "1", value: String(job.progress || 0), "aria-label": "Training progress" });
    const eta = h("p", { class: "eta" }, "");
    const canvas = h("canvas", { class: "chart", role: "img", "aria-label": "Loss curves" });
    const legend = h("div", { class: "legend" });
    const chart = new LineChart(canvas, legend);
    const sample = h("div", { class: "sample" }, h("p", { class: "hint" }, "The latest sample grid appears here."));
    const metrics = h("div", { class: "scroll" });
    const cancel = h("button", { type: "button", class: "danger", onclick: () => doCancel() }, "Cancel");
    const retry = h("button", { type: "button", class: "secondary", onclick: () => doRetry(), title: "Continue from the last checkpoint", hidden: true }, "Retry");
    const showRetry = (j) => { retry.hidden = !(j.kind === "train" && ["failed", "cancelled"].includes(j.state)); };
    const err = errorBox();
    const done = h("div", { "aria-live": "polite" });
    jobView.replaceChildren(title, stateLine, bar, eta, h("h3", {}, "Losses"), canvas, legend,
      h("h3", {}, "Latest samples"), sample, h("h3", {}, "Metrics"), metrics, h("div", { class: "row" }, cancel, retry), err, done);
    showRetry(job);
    chart.draw();
    jobView.scrollIntoView({ block: "nearest" });

    async function doRetry() {
      clearError(err);
      retry.disabled = true;
      try {
        const again = await (await request(`/api/jobs/${job.id}/retry`, { method: "POST" })).json();
        follow(again);
        listRecent();
      } catch (e) { showError(err, e); retry.disabled = false; }
    }

    async function doCancel() {
      clearError(err);
      try { await request(`/api/jobs/${job.id}/cancel`, { method: "POST" }); stateLine.textContent = "Cancelling: saving a checkpoint…"; } catch (e) { showError(err, e); }
    }

    stop = watchJob(job.id, {
      state: (s) => { stateLine.textContent = `State: ${s}`; },
      progress: (p) => {
        bar.value = p.progress || 0;
        const pct = Math.round((p.progress || 0) * 100);
        eta.textContent = `Step ${p.step} / ${p.total} · ${pct}%` + (p.eta_seconds !== null && p.eta_seconds !== undefined ? ` · about ${formatDuration(p.eta_seconds)} left` : "");
        const m = p.metrics || {};
        const losses = Object.fromEntries(Object.entries(m).filter(([k]) => k.toLowerCase().includes("loss")));
        chart.add(p.step, Object.keys(losses).length ? losses : m);
        metrics.replaceChildren(h("table", {}, h("tbody", {}, ...Object.entries(m).map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", { class: "num" }, typeof v === "number" ? v.toPrecision(4) : String(v)))))));
      },
      sample: (s) => { sample.replaceChildren(apiImg(s.url, `Sample grid ${s.file}`, { class: "grid-img" }), h("p", { class: "hint" }, s.file)); },
      end: (j) => {
        cancel.disabled = true;
        showRetry(j);
        stateLine.textContent = `State: ${j.state}`;
        if (j.state === "succeeded") {
          bar.value = 1;
          const m = j.result && j.result.model;
          done.replaceChildren(h("p", { class: "ok" }, "Training finished. "),
            m ? h("a", { class: "button", href: `#/models?name=${encodeURIComponent(m.name)}` }, `See model ${m.name} v${m.version}`) : "");
        } else if (j.state === "failed") {
          showError(err, new Error(j.error ? j.error.message : "training failed"));
        } else {
          done.replaceChildren(h("p", {}, `Training ${j.state}.`));
        }
        listRecent();
      },
      error: (e) => showError(err, e),
    });
  }

  async function listRecent() {
    try {
      const jobs = (await getJSON("/api/jobs?kind=train&limit=10")).items;
      if (!jobs.length) { recent.replaceChildren(h("p", { class: "empty" }, "None yet.")); return; }
      recent.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Model"), h("th", {}, "Dataset"), h("th", {}, "State"), h("th", { class: "num" }, "Progress"), h("th", {}, ""))),
        h("tbody", {}, ...jobs.map((j) => h("tr", {},
          h("td", {}, j.params?.config?.model || ""), h("td", {}, j.params?.config?.dataset || ""), h("td", {}, j.state),
          h("td", { class: "num" }, `${Math.round((j.progress || 0) * 100)}%`),
          h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => follow(j) }, "Watch")))))));
    } catch { /* the list is a convenience */ }
  }

  load();
  return () => { if (stop) stop(); };
}
