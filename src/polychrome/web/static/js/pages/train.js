// Train: dataset + architecture + preset (with a time estimate measured on this machine),
// then a live view of the job: progress and ETA, loss curves, sample grids, cancel, and
// retry (a failed or cancelled job resumes from its last checkpoint).
import { getJSON, postJSON, request } from "../api.js";
import { LineChart } from "../chart.js";
import { watchJob } from "../jobs.js";
import { isCurve, isMainLoss, lossName } from "../losses.js";
import { apiImg, clearError, errorBox, field, formatDuration, h, showError, status } from "../ui.js";

const FAMILY_KEY = "polychrome.train.model"; // the model family last chosen on this page

function remembered() {
  try { return localStorage.getItem(FAMILY_KEY) || ""; } catch { return ""; }
}

function remember(value) {
  try { localStorage.setItem(FAMILY_KEY, value); } catch { /* private mode: the URL keeps it */ }
  // The address says it too, so a reload or a shared link opens the same family.
  history.replaceState(null, "", `#/train?model=${encodeURIComponent(value)}`);
}

export function mount(root, params) {
  let presets = [];
  let stop = null;
  let measured = null; // {key, steps, seconds} of the last measured estimate

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

  archSel.addEventListener("change", () => { remember(archSel.value); loadPresets(); });
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
      const known = (v) => v && [...archSel.options].some((o) => o.value === v);
      archSel.value = [params.get("model"), remembered(), "dcgan"].find(known) || "";
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
  // What an estimate was measured for: a change to any of these makes it stale.
  const settingsKey = () => JSON.stringify([archSel.value, dsSel.value, preset()?.name, steps.value, resolution.value,
    batch.value, taskSel.value, scales.value, crop.value]);
  /** The measured rate (steps per second) for the settings on the form, or null. */
  const measuredRate = () => (measured && measured.key === settingsKey() ? measured.steps / measured.seconds : null);

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
      if (e.estimated_seconds > 0) measured = { key: settingsKey(), steps: e.steps, seconds: e.estimated_seconds };
    } catch (e) {
      estOut.textContent = "Time: not measured.";
      showError(estErr, e);
    } finally { estBtn.disabled = false; }
  }

  async function startJob() {
    clearError(startErr);
    const p = preset();
    if (!p) { showError(startErr, new Error("choose a preset")); return; }
    // The steps the estimate chose (Quick is sized to about 5 minutes on this machine) when it
    // was measured for these settings; else the preset's own.
    const total = num(steps) || (measured && measured.key === settingsKey() ? measured.steps : p.steps);
    // A sample grid every tenth of the run, and the first within about a minute when the
    // rate on this machine was measured.
    const rate = measuredRate();
    const tenth = Math.max(1, Math.floor(total / 10));
    const sampleEvery = rate ? Math.max(1, Math.min(tenth, Math.round(rate * 45))) : tenth;
    const config = { ...p.config, sample_every: sampleEvery, checkpoint_every: Math.max(1, Math.floor(total / 5)), log_every: Math.max(1, Math.min(10, Math.floor(total / 50))) };
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
      follow(job, rate);
      listRecent();
    } catch (e) { showError(startErr, e); } finally { start.disabled = false; }
  }

  function follow(job, estimatedRate = null) {
    if (stop) stop();
    jobView.hidden = false;
    const cfg = job.params?.config || {};
    const title = h("h2", {}, `Training ${cfg.model || ""} on ${cfg.dataset || ""}`);
    const stateLine = status("");
    const bar = h("progress", { max: "1", value: String(job.progress || 0), "aria-label": "Training progress" });
    const eta = h("p", { class: "eta", "aria-live": "off" }, "");
    const canvas = h("canvas", { class: "chart", role: "img", "aria-label": "Loss curves" });
    const legend = h("div", { class: "legend" });
    const allBox = h("input", { type: "checkbox" });
    const chart = new LineChart(canvas, legend, { label: lossName, shown: isMainLoss });
    allBox.addEventListener("change", () => chart.setShown(allBox.checked ? () => true : isMainLoss));
    const sample = h("div", { class: "sample" }, h("p", { class: "hint" }, "The latest sample grid appears here."));
    const metrics = h("div", { class: "scroll" });
    const cancel = h("button", { type: "button", class: "danger", onclick: () => doCancel() }, "Cancel");
    const retry = h("button", { type: "button", class: "secondary", onclick: () => doRetry(), title: "Continue from the last checkpoint", hidden: true }, "Retry");
    const showRetry = (j) => { retry.hidden = !(j.kind === "train" && ["failed", "cancelled"].includes(j.state)); };
    const err = errorBox();
    const done = h("div", { "aria-live": "polite" });
    jobView.replaceChildren(title, stateLine, bar, eta, h("h3", {}, "Losses"), canvas, legend,
      h("label", { class: "check" }, allBox, " Show every logged value (penalties, scores, reference-guided losses)"),
      h("h3", {}, "Latest samples"), sample, h("h3", {}, "Metrics"), metrics, h("div", { class: "row" }, cancel, retry), err, done);
    showRetry(job);
    chart.draw();
    jobView.scrollIntoView({ block: "nearest" });

    // What the page knows of the job: the job row, then each progress event on top of it.
    const cur = { ...job };
    let cancelling = false;
    let seen = null; // {step, t}: the first step this page saw the job at, for its own rate
    let rate = null; // steps per second
    const planned = () => cur.total || cfg.steps || 0;
    const since = (iso) => {
      const t = Date.parse(iso || "");
      return Number.isFinite(t) ? Math.max(0, (Date.now() - t) / 1000) : null;
    };
    const perStep = (r) => (r >= 1 ? `${r.toPrecision(3)} steps/s` : `${(1 / r).toPrecision(3)} s per step`);

    function describe() {
      const total = planned();
      const s = cur.state;
      if (s === "queued") {
        const waited = since(cur.created);
        stateLine.textContent = "State: queued, waiting for a free worker" + (waited !== null ? ` (${formatDuration(waited)} so far)` : "") + ".";
        const left = Math.max(0, total - (cur.step || 0)); // a retried job resumes where it stopped
        eta.textContent = `Queued · ${(cur.step || 0).toLocaleString()} / ${total.toLocaleString()} steps · ` + (estimatedRate
          ? `about ${formatDuration(left / estimatedRate)} once it starts (${perStep(estimatedRate)}, measured on this machine)`
          : "rate and time left once it starts");
        return;
      }
      if (s === "running" && (cur.step || 0) === 0 && !Object.keys(cur.metrics || {}).length) {
        const ran = since(cur.started);
        stateLine.textContent = cancelling ? "Cancelling: saving a checkpoint…"
          : "State: starting, building the model and loading the data" + (ran !== null ? ` (${formatDuration(ran)})` : "") + ".";
        eta.textContent = `Starting · 0 / ${total.toLocaleString()} steps · ` + (estimatedRate
          ? `about ${formatDuration(total / estimatedRate)} (${perStep(estimatedRate)}, measured on this machine)` : "measuring the rate…");
        return;
      }
      const pct = Math.round((cur.progress || 0) * 100);
      const parts = [`Step ${(cur.step || 0).toLocaleString()} / ${total.toLocaleString()}`, `${pct} %`];
      if (rate) parts.push(perStep(rate));
      if (s === "running") {
        if (cur.eta_seconds !== null && cur.eta_seconds !== undefined) parts.push(`about ${formatDuration(cur.eta_seconds)} left`);
        else parts.push(rate ? `about ${formatDuration((total - cur.step) / rate)} left` : "measuring the rate…");
        const ran = since(cur.started);
        stateLine.textContent = cancelling ? "Cancelling: saving a checkpoint…"
          : "State: training" + (ran !== null ? ` for ${formatDuration(ran)}` : "") + ".";
      } else {
        const took = (Date.parse(cur.finished || "") - Date.parse(cur.started || "")) / 1000;
        if (Number.isFinite(took) && took >= 0) parts.push(`${s} after ${formatDuration(took)}`);
        stateLine.textContent = `State: ${s}`;
      }
      eta.textContent = parts.join(" · ");
    }
    describe();
    const ticker = setInterval(describe, 1000); // the waiting and running times move every second

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
      try {
        await request(`/api/jobs/${job.id}/cancel`, { method: "POST" });
        cancelling = true;
        describe();
      } catch (e) { showError(err, e); }
    }

    const unwatch = watchJob(job.id, {
      state: (s) => { cur.state = s; if (s === "running" && !cur.started) cur.started = new Date().toISOString(); describe(); },
      progress: (p) => {
        Object.assign(cur, p);
        const now = Date.now();
        if (p.state === "running" && p.step > 0) {
          // The server's ETA is over this attempt's steps: its rate is the one it predicts with.
          if (p.eta_seconds > 0 && p.total > p.step) rate = (p.total - p.step) / p.eta_seconds;
          else if (seen && p.step > seen.step) rate = (p.step - seen.step) / ((now - seen.t) / 1000);
          if (!seen) seen = { step: p.step, t: now };
        }
        bar.value = p.progress || 0;
        describe();
        const m = p.metrics || {};
        chart.add(p.step, Object.fromEntries(Object.entries(m).filter(([k]) => isCurve(k))));
        metrics.replaceChildren(h("table", {}, h("tbody", {}, ...Object.entries(m).map(([k, v]) => h("tr", {},
          h("th", { scope: "row", title: k }, lossName(k)),
          h("td", { class: "num" }, typeof v === "number" ? v.toPrecision(4) : String(v)))))));
      },
      sample: (s) => {
        const at = /(\d+)/.exec(s.file);
        sample.replaceChildren(apiImg(s.url, `Sample grid ${s.file}`, { class: "grid-img" }),
          h("p", { class: "hint" }, at ? `Samples at step ${parseInt(at[1], 10).toLocaleString()} (${s.file})` : s.file));
      },
      end: (j) => {
        Object.assign(cur, j);
        cancel.disabled = true;
        showRetry(j);
        describe();
        clearInterval(ticker);
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
    stop = () => { unwatch(); clearInterval(ticker); };
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
