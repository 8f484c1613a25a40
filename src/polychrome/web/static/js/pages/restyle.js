// Restyle: a picture into a style or a reference picture's style, live.
// The picture is uploaded once (a session: its content encoding stays on the server);
// changing the style or the strength then only re-runs the decoder. Previews are not
// kept; "Save" / "Download full size" render the same style at full size into the gallery
// (models trained on crops preview at <= 512 px and render the picture's own size).
import { PICTURE_REFUSED, addSessionReference, imageName, openRestyleSession, postImage, request } from "../api.js";
import { fullSizeControls, previewCaption } from "../fullsize.js";
import { handoff, listModels, takeRecipe } from "../state.js";
import { swatchGroup } from "../swatches.js";
import {
  apiImg, clearError, debounce, downloadLink, dropZone, errorBox, field, fillModels, h, seedField, showError,
  slider, status, upscaleField,
} from "../ui.js";

export function mount(root, params) {
  const models = [];
  const urls = new Set();
  let picture = null; // {blob, name}
  let session = null; // server session description
  let target = null; // style name or "ref:<sha256>"
  let inflight = null; // AbortController of the live render
  let lastResult = null;

  const modelSel = h("select", {});
  const modelErr = errorBox();
  const input = dropZone({ label: "Drop a picture here, or choose one", accept: "image/*", onFiles: (f) => setPicture(f[0].file, f[0].file.name) });
  const inputErr = errorBox();
  const styleBox = h("div", {});
  const ref = dropZone({ label: "…or drop a reference picture to copy its style", accept: "image/*", onFiles: (f) => addReference(f[0].file) });
  const refErr = errorBox();
  const strength = slider("Strength", { min: 0, max: 1, step: 0.05, value: 1 });
  const seed = seedField("Seed", 0);
  const variations = h("input", { type: "number", min: "1", max: "16", value: "4" });
  const varBtn = h("button", { type: "button", class: "secondary", onclick: () => makeVariations() }, "Make variations");
  const varErr = errorBox();
  const before = h("img", { alt: "Before: no picture yet" });
  const after = h("img", { alt: "After: no result yet" });
  const afterCaption = h("figcaption", {}, "After");
  const download = h("a", { class: "button secondary", href: "#", download: "restyled.png", hidden: true }, "Download preview");
  const upscale = upscaleField();
  const full = fullSizeControls({ request: () => (session && target ? renderBody() : null), upscale });
  const resultErr = errorBox();
  const note = status("Choose a picture to start.");
  const varGrid = h("div", { class: "grid small", "aria-live": "polite", "aria-label": "Variations" });

  const controls = h("div", { class: "panel" },
    field("Model", modelSel, "Image → image (translation) models."), modelErr,
    input.el, inputErr,
    styleBox,
    ref.el, refErr,
    strength.el,
    seed.el,
    h("div", { class: "row" }, field("Variations", variations), varBtn), varErr);
  const view = h("section", { class: "panel", "aria-label": "Before and after" },
    h("div", { class: "compare" },
      h("figure", {}, before, h("figcaption", {}, "Before")),
      h("figure", { class: "result", "aria-live": "polite" }, after, afterCaption)),
    resultErr, note, full.el, h("div", { class: "row" }, download),
    h("h2", {}, "Variations"), varGrid);
  root.append(h("h1", {}, "Restyle"), h("div", { class: "cols" }, controls, view));

  let group = null;
  const live = debounce(() => render(), 120);
  before.addEventListener("error", () => {
    if (!before.getAttribute("src")) return;
    before.removeAttribute("src");
    before.alt = `Before: ${picture ? picture.name : "picture"} (this browser cannot show it)`;
  });

  modelSel.addEventListener("change", () => { buildStyles(); if (picture) openSession(); });
  strength.input.addEventListener("input", () => live());
  strength.input.addEventListener("change", () => { live.cancel(); render(); });
  seed.input.addEventListener("change", () => render());

  function model() { return models.find((m) => m.name === modelSel.value); }

  function buildStyles() {
    const m = model();
    if (!m) return;
    target = target && !target.startsWith("ref:") && m.styles.includes(target) ? target : null;
    group = swatchGroup("Target style", m.styles.map((s) => ({ value: s, label: s })), (v) => { target = v; render(); }, null);
    styleBox.replaceChildren(group.el);
    if (target) group.select(target);
    else {
      target = m.styles[Math.min(1, m.styles.length - 1)];
      group.select(target);
    }
  }

  async function load() {
    const recipe = takeRecipe("restyle");
    try { models.push(...(await listModels())); } catch (e) { showError(modelErr, e); return; }
    upscale.setModels(models);
    if (!fillModels(modelSel, models, (m) => m.family === "translation", params.get("model") || "")) {
      modelErr.textContent = "No image → image model yet: train a stargan (or cyclegan) on the Train page.";
      return;
    }
    if (recipe) {
      if (modelSel.value !== recipe.model) showError(modelErr, new Error(`no image → image model named ${recipe.model} here`));
      else if (recipe.style && model().styles.includes(recipe.style)) target = recipe.style;
      strength.input.value = String(recipe.strength);
      strength.output.textContent = String(recipe.strength);
      seed.input.value = String(recipe.seed);
      note.textContent = ["Settings loaded from the PNG: choose the picture to restyle.", ...recipe.notes].join(" ");
    }
    buildStyles();
    if (handoff.restyle) {
      const { blob, name } = handoff.restyle;
      handoff.restyle = null;
      setPicture(blob, name);
    }
  }

  function objectUrl(blob) {
    const u = URL.createObjectURL(blob);
    urls.add(u);
    return u;
  }

  // The before / after pictures show only what the server accepted: a rejected upload
  // leaves the message, never a broken image.
  function clearPictures() {
    for (const img of [before, after]) img.removeAttribute("src");
    before.alt = "Before: no picture yet";
    after.alt = "After: no result yet";
    delete after.dataset.style;
    afterCaption.textContent = "After";
    download.hidden = true;
  }

  function setPicture(blob, name) {
    clearError(inputErr);
    clearError(resultErr);
    clearPictures();
    picture = { blob, name: name || "picture.png" };
    openSession();
  }

  async function openSession() {
    if (!picture || !model()) return;
    session = null;
    full.setSession(null);
    note.textContent = "Uploading and encoding the picture…";
    const pic = picture;
    try {
      session = await openRestyleSession(modelSel.value, pic.blob, pic.name);
    } catch (e) {
      if (picture !== pic) return; // another picture was chosen meanwhile
      showError(inputErr, e);
      if (PICTURE_REFUSED.includes(e.code) || e.status === 413) {
        picture = null; // the picture itself was refused
        clearPictures();
        note.textContent = "Choose another picture.";
      } else {
        note.textContent = "";
      }
      return;
    }
    if (picture !== pic) return;
    if (!before.getAttribute("src")) {
      before.src = objectUrl(pic.blob);
      before.alt = `Before: ${pic.name}`;
    }
    full.setSession(session);
    for (const img of [before, after]) img.classList.toggle("smooth", Boolean(session.native));
    note.textContent = "Picture ready: pick a style or move the strength slider.";
    await render();
    previewSwatches();
  }

  // Each style's swatch shows this picture in that style (cheap: decoder only).
  async function previewSwatches() {
    const s = session;
    for (const style of model().styles) {
      try {
        const img = await postImage(`/api/restyle/sessions/${s.session}/render`, { json: { style, seed: 0, save: false } });
        if (session !== s) return;
        urls.add(img.url);
        group.setPicture(style, h("img", { src: img.url, alt: "" }));
      } catch { return; }
    }
  }

  async function addReference(file) {
    clearError(refErr);
    if (!session) { showError(refErr, new Error("choose the picture to restyle first")); return; }
    try {
      const out = await addSessionReference(session.session, file);
      const btn = group.add(out.reference, `ref: ${file.name}`, h("img", { src: objectUrl(file), alt: "" }));
      group.select(out.reference);
      target = out.reference;
      btn.focus();
      await render();
    } catch (e) { showError(refErr, e); }
  }

  function renderBody() {
    return { style: target, strength: parseFloat(strength.input.value), seed: parseInt(seed.input.value, 10) || 0 };
  }

  // Previews only (save=false): "Save" keeps the current style at full size.
  async function render() {
    if (!session || !target) return;
    clearError(resultErr);
    if (inflight) inflight.abort(); // a newer request makes the older one stale
    const ctrl = new AbortController();
    inflight = ctrl;
    const body = { ...renderBody(), save: false };
    try {
      const img = await postImage(`/api/restyle/sessions/${session.session}/render`, { json: body, signal: ctrl.signal });
      if (ctrl.signal.aborted) return;
      urls.add(img.url);
      if (lastResult) { URL.revokeObjectURL(lastResult); urls.delete(lastResult); }
      lastResult = img.url;
      after.src = img.url;
      after.alt = `After: ${img.headers.get("x-polychrome-style") || target}, strength ${body.strength}`;
      after.dataset.style = target;
      afterCaption.textContent = `After: ${previewCaption(session, img.headers)}`;
      download.href = img.url;
      download.download = imageName({ model: session.model.split(":")[0], op: "restyle", style: target.startsWith("ref:") ? "ref" : target, seed: String(body.seed) });
      download.hidden = !session.native; // a whole model's preview is its result: "Download"
      note.textContent = session.native ? "Preview: Save keeps this style in the gallery at full size."
        : "Preview: Save keeps this result in the gallery.";
    } catch (e) {
      if (e.name === "AbortError") return;
      if (e.code === "unknown_session") { openSession(); return; } // expired: upload again
      showError(resultErr, e);
    } finally {
      if (inflight === ctrl) inflight = null;
    }
  }

  async function makeVariations() {
    clearError(varErr);
    if (!picture) { showError(varErr, new Error("choose a picture first")); return; }
    if (!target || target.startsWith("ref:")) { showError(varErr, new Error("variations need a learned style (a reference has no seed)")); return; }
    const form = new FormData();
    form.append("model", modelSel.value);
    form.append("style", target);
    form.append("strength", strength.input.value);
    form.append("seed", String(parseInt(seed.input.value, 10) || 0));
    form.append("variations", variations.value || "1");
    form.append("size", full.size());
    form.append("image", picture.blob, picture.name);
    varBtn.disabled = true;
    try {
      const res = await request("/api/restyle", { method: "POST", form });
      const type = res.headers.get("content-type") || "";
      const items = type.includes("json") ? (await res.json()).images : null;
      varGrid.replaceChildren();
      if (items) {
        for (const im of items) {
          varGrid.append(h("figure", { class: "card" }, apiImg(im.url, `${im.style}, seed ${im.seed}`),
            h("figcaption", {}, `seed ${im.seed}`), downloadLink(im.url, `restyle-${im.id}.png`)));
        }
      } else {
        const u = objectUrl(await res.blob());
        varGrid.append(h("figure", { class: "card" }, h("img", { src: u, alt: "variation" })));
      }
    } catch (e) { showError(varErr, e); } finally { varBtn.disabled = false; }
  }

  load();
  return () => {
    if (inflight) inflight.abort();
    live.cancel();
    full.dispose();
    urls.forEach((u) => URL.revokeObjectURL(u));
  };
}
