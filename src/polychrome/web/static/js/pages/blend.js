// Blend: several styles (and reference pictures) with weights; the result follows the sliders.
// Noise models: POST /api/mix (saved when a slider settles). Translation models: a restyle
// session renders previews of the blend (decoder only); "Save" / "Download full size"
// render it at full size into the gallery. "Animate" renders the interpolation GIF
// (POST /api/interpolate).
import { addSessionReference, imageName, openRestyleSession, postImage } from "../api.js";
import { fullSizeControls, previewCaption } from "../fullsize.js";
import { listModels, takeRecipe } from "../state.js";
import {
  clearError, debounce, dropZone, errorBox, field, fillModels, h, seedField, showError, status,
} from "../ui.js";

export function mount(root, params) {
  const models = [];
  const urls = new Set();
  let picture = null;
  let session = null;
  let inflight = null;
  const refs = new Map(); // "ref:<sha>" -> {file, label}
  let rows = []; // {key, label, input, output}

  const modelSel = h("select", {});
  const modelErr = errorBox();
  const loaded = h("p", { class: "hint loaded" });
  const pictureBox = h("div", {});
  const pictureErr = errorBox();
  const weightsBox = h("div", { class: "weights stack" });
  const refZone = dropZone({ label: "Add a reference picture", accept: "image/*", onFiles: (f) => addReference(f[0].file) });
  const refWrap = h("div", { hidden: true }, refZone.el);
  const refErr = errorBox();
  const seed = seedField("Seed", 0);
  const result = h("img", { alt: "Blend: no result yet" });
  const caption = h("figcaption", {}, "The blend");
  const full = fullSizeControls({ request: () => (session && Object.keys(weights()).length ? { weights: weights(), seed: parseInt(seed.input.value, 10) || 0 } : null) });
  const download = h("a", { class: "button secondary", href: "#", download: "blend.png", hidden: true }, "Download");
  const resultErr = errorBox();
  const note = status();
  const fromSel = h("select", {});
  const toSel = h("select", {});
  const frames = h("input", { type: "number", min: "2", max: "32", value: "8" });
  const animBtn = h("button", { type: "button", onclick: () => animate() }, "Animate");
  const anim = h("img", { class: "anim", alt: "Interpolation animation", hidden: true });
  const animLink = h("a", { class: "button secondary", href: "#", download: "interpolation.gif", hidden: true }, "Download GIF");
  const animErr = errorBox();

  root.append(h("h1", {}, "Blend"), h("div", { class: "cols" },
    h("div", { class: "panel" },
      field("Model", modelSel, "Models with several styles."), modelErr, loaded,
      pictureBox, pictureErr,
      h("fieldset", {}, h("legend", {}, "Weights"), weightsBox),
      refWrap, refErr,
      seed.el),
    h("section", { class: "panel", "aria-label": "Result" },
      h("figure", { class: "result", "aria-live": "polite" }, result, caption),
      resultErr, note, full.el, h("div", { class: "row" }, download),
      h("h2", {}, "Animate"),
      h("div", { class: "row" }, field("From", fromSel), field("To", toSel), field("Frames", frames)),
      h("div", { class: "row" }, animBtn, animLink), animErr, anim)));

  const live = debounce(() => render(false), 120);
  modelSel.addEventListener("change", () => { loaded.textContent = ""; setupModel(); });
  seed.input.addEventListener("change", () => render(true));

  function model() { return models.find((m) => m.name === modelSel.value); }
  const isTranslation = () => model() && model().family === "translation";

  async function load() {
    const recipe = takeRecipe("blend");
    try { models.push(...(await listModels())); } catch (e) { showError(modelErr, e); return; }
    if (!fillModels(modelSel, models, (m) => m.styles.length > 1 && m.arch !== "cyclegan", params.get("model") || "")) {
      modelErr.textContent = "No model with several styles yet: train one on the Train page.";
      return;
    }
    if (recipe && modelSel.value !== recipe.model) {
      showError(modelErr, new Error(`no model with several styles named ${recipe.model} here`));
      setupModel();
      return;
    }
    if (recipe) seed.input.value = String(recipe.seed);
    setupModel(recipe);
    if (recipe) loaded.textContent = ["Weights and seed loaded from the PNG.", ...recipe.notes].join(" ");
  }

  // What the previous model made (its blend, its animation) leaves with it.
  function clearResults() {
    if (inflight) inflight.abort();
    live.cancel();
    for (const img of [result, anim]) img.removeAttribute("src");
    result.alt = "Blend: no result yet";
    anim.hidden = true;
    animLink.hidden = true;
    animLink.removeAttribute("href");
    download.hidden = true;
    clearError(resultErr);
    clearError(animErr);
  }

  /** recipe (from a dropped PNG): its weights and animation ends instead of the defaults. */
  function setupModel(recipe = null) {
    const m = model();
    clearResults();
    session = null;
    full.setSession(null);
    caption.textContent = "The blend";
    refs.clear();
    rows = [];
    weightsBox.replaceChildren();
    const given = recipe && Object.keys(recipe.weights || {}).length ? recipe.weights : null;
    m.styles.forEach((s, i) => addRow(s, s, given ? given[s] || 0 : i < 2 ? 0.5 : 0));
    refWrap.hidden = !isTranslation();
    if (isTranslation()) {
      const zone = dropZone({ label: "Drop the picture to restyle, or choose one", accept: "image/*", onFiles: (f) => setPicture(f[0].file) });
      pictureBox.replaceChildren(zone.el);
      note.textContent = "Choose a picture to blend styles on.";
      picture = null;
    } else {
      pictureBox.replaceChildren();
      note.textContent = "";
      render(true);
    }
    fillEnds();
    if (recipe && recipe.from && recipe.to && m.styles.includes(recipe.from) && m.styles.includes(recipe.to)) {
      fromSel.value = recipe.from;
      toSel.value = recipe.to;
    }
  }

  function addRow(key, label, value, thumb) {
    const input = h("input", { type: "range", min: "0", max: "1", step: "0.01", value: String(value), dataset: { key } });
    input.id = `w-${rows.length}-${Math.random().toString(36).slice(2, 7)}`;
    const output = h("output", { for: input.id }, Number(value).toFixed(2));
    input.addEventListener("input", () => { output.textContent = Number(input.value).toFixed(2); live(); });
    input.addEventListener("change", () => { live.cancel(); render(true); });
    const lab = h("label", { for: input.id }, thumb || "", label);
    weightsBox.append(h("div", { class: "wrow" }, lab, input, output));
    rows.push({ key, label, input, output });
  }

  function fillEnds() {
    for (const sel of [fromSel, toSel]) {
      const keep = sel.value;
      sel.replaceChildren(...rows.map((r) => h("option", { value: r.key }, r.label)));
      if (keep && rows.some((r) => r.key === keep)) sel.value = keep;
    }
    if (!fromSel.value && rows.length) fromSel.value = rows[0].key;
    if (rows.length > 1 && (!toSel.value || toSel.value === fromSel.value)) toSel.value = rows[1].key;
  }

  function weights() {
    const out = {};
    for (const r of rows) {
      const w = parseFloat(r.input.value);
      if (w > 0) out[r.key] = w;
    }
    return out;
  }

  async function setPicture(file) {
    clearError(pictureErr);
    picture = file;
    note.textContent = "Uploading and encoding the picture…";
    try {
      session = await openRestyleSession(modelSel.value, file, file.name);
      full.setSession(session);
      result.classList.toggle("smooth", Boolean(session.native));
      const u = URL.createObjectURL(file);
      urls.add(u);
      pictureBox.querySelector(".drop span").replaceChildren(h("img", { src: u, alt: `Picture: ${file.name}` }), h("br"), file.name);
      note.textContent = "";
      render(true);
    } catch (e) {
      showError(pictureErr, e);
      note.textContent = "";
    }
  }

  async function addReference(file) {
    clearError(refErr);
    if (!session) { showError(refErr, new Error("choose the picture to restyle first")); return; }
    try {
      const out = await addSessionReference(session.session, file);
      refs.set(out.reference, { file, label: file.name });
      const u = URL.createObjectURL(file);
      urls.add(u);
      addRow(out.reference, `ref ${file.name}`, 0.5, h("img", { src: u, alt: "" }));
      fillEnds();
      render(true);
    } catch (e) { showError(refErr, e); }
  }

  // Noise models: save=false while a slider moves, true when it settles. Translation
  // models: previews only ("Save" renders the blend at full size).
  async function render(save) {
    const w = weights();
    if (!Object.keys(w).length) { note.textContent = "Give at least one style a weight above 0."; return; }
    if (isTranslation() && !session) return;
    if (isTranslation()) save = false;
    clearError(resultErr);
    if (inflight) inflight.abort();
    const ctrl = new AbortController();
    inflight = ctrl;
    const s = parseInt(seed.input.value, 10) || 0;
    try {
      const img = isTranslation()
        ? await postImage(`/api/restyle/sessions/${session.session}/render`, { json: { weights: w, seed: s, save }, signal: ctrl.signal })
        : await postImage("/api/mix", { json: { model: modelSel.value, weights: w, seed: s, save }, signal: ctrl.signal });
      if (ctrl.signal.aborted) return;
      urls.add(img.url);
      result.src = img.url;
      result.alt = `Blend: ${img.headers.get("x-polychrome-style") || ""}`;
      download.href = img.url;
      download.download = imageName({ model: modelSel.value, op: "mix", style: "blend", seed: String(s) });
      download.hidden = Boolean(session && !session.native); // whole models: "Download" below
      download.textContent = isTranslation() ? "Download preview" : "Download";
      if (isTranslation()) caption.textContent = `The blend: ${previewCaption(session, img.headers)}`;
      note.textContent = save ? "Saved to the gallery." : !isTranslation() ? "Preview" : session.native ? "Preview: Save keeps this blend in the gallery at full size." : "Preview: Save keeps this blend in the gallery.";
    } catch (e) {
      if (e.name !== "AbortError") showError(resultErr, e);
    } finally {
      if (inflight === ctrl) inflight = null;
    }
  }

  async function animate() {
    clearError(animErr);
    if (fromSel.value === toSel.value) { showError(animErr, new Error("choose two different ends")); return; }
    const n = Math.max(2, Math.min(32, parseInt(frames.value, 10) || 8));
    const s = parseInt(seed.input.value, 10) || 0;
    let opts;
    if (isTranslation()) {
      if (!picture) { showError(animErr, new Error("choose the picture to restyle first")); return; }
      const form = new FormData();
      form.append("model", modelSel.value);
      form.append("frames", String(n));
      form.append("seed", String(s));
      if (session && session.native) { // the animation at the preview's size, unscaled
        form.append("size", String(Math.max(session.preview_width, session.preview_height)));
        form.append("scale", "1");
      } else {
        form.append("scale", "4");
      }
      form.append("image", picture, picture.name);
      for (const [end, key] of [["from", fromSel.value], ["to", toSel.value]]) {
        if (refs.has(key)) form.append(`${end}_reference`, refs.get(key).file, refs.get(key).label);
        else form.append(end, key);
      }
      opts = { form };
    } else {
      opts = { json: { model: modelSel.value, from: fromSel.value, to: toSel.value, frames: n, seed: s, scale: 4 } };
    }
    animBtn.disabled = true;
    animBtn.textContent = "Rendering…";
    const forModel = modelSel.value;
    try {
      const gif = await postImage("/api/interpolate", opts);
      urls.add(gif.url);
      if (modelSel.value !== forModel) return;
      anim.src = gif.url;
      anim.hidden = false;
      animLink.href = gif.url;
      animLink.hidden = false;
    } catch (e) { showError(animErr, e); } finally {
      animBtn.disabled = false;
      animBtn.textContent = "Animate";
    }
  }

  load();
  return () => {
    if (inflight) inflight.abort();
    live.cancel();
    full.dispose();
    urls.forEach((u) => URL.revokeObjectURL(u));
  };
}
