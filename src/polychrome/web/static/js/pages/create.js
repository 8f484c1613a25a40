// Create: generate images from a noise -> image model, one style at a time.
import { imageName, postImage } from "../api.js";
import { handoff, listModels, takeRecipe } from "../state.js";
import { samplesSwatches, swatchGroup } from "../swatches.js";
import { clearError, errorBox, field, fillModels, h, seedField, showError, slider, status, upscaleField } from "../ui.js";

export function mount(root, params) {
  const models = [];
  let style = null; // null = let the seed pick (cycles through styles)
  let busy = false;
  const urls = [];

  const modelSel = h("select", {});
  const modelErr = errorBox();
  const styleBox = h("div", {});
  const seed = seedField("Seed", 1);
  const count = h("input", { type: "number", min: "1", max: "16", value: "4", step: "1" });
  const trunc = slider("Truncation (lower = safer, less varied)", { min: 0, max: 1.5, step: 0.05, value: 1 });
  const truncWrap = h("div", { hidden: true }, trunc.el);
  const upscale = upscaleField();
  const go = h("button", { type: "submit" }, "Generate");
  const genErr = errorBox();
  const note = status();
  const results = h("div", { class: "grid", "aria-live": "polite", "aria-label": "Generated images" });

  const form = h("form", { class: "panel", onsubmit: (e) => { e.preventDefault(); generate(); } },
    field("Model", modelSel, "Noise → image models. Train one on the Train page."), modelErr,
    styleBox,
    seed.el,
    field("How many", count, "Image i uses seed + i."),
    truncWrap,
    upscale.el,
    h("div", { class: "row" }, go), genErr, note);

  root.append(h("h1", {}, "Create"),
    h("div", { class: "cols" }, form, h("section", { "aria-label": "Results" }, h("h2", {}, "Results"), results)));

  modelSel.addEventListener("change", () => pickModel(modelSel.value));

  async function load() {
    const recipe = takeRecipe("create");
    if (recipe) {
      handoff.create = { model: recipe.model, style: recipe.style, seed: recipe.seed, truncation: recipe.truncation };
    }
    try {
      models.push(...(await listModels()));
    } catch (e) { showError(modelErr, e); return; }
    upscale.setModels(models);
    const wanted = handoff.create ? handoff.create.model : params.get("model");
    const n = fillModels(modelSel, models, (m) => m.family === "noise", wanted || "");
    if (!n) {
      modelErr.textContent = "No noise → image model yet: train one on the Train page (e.g. dcgan or cgan).";
      go.disabled = true;
      return;
    }
    await pickModel(modelSel.value);
    if (handoff.create) {
      const s = handoff.create;
      handoff.create = null;
      seed.input.value = String(s.seed);
      count.value = "1";
      if (s.truncation !== undefined) { trunc.input.value = String(s.truncation); trunc.output.textContent = String(s.truncation); }
      setStyle(s.style);
      if (recipe && modelSel.value !== recipe.model) showError(modelErr, new Error(`no noise → image model named ${recipe.model} here`));
      if (recipe && recipe.upscale) {
        const opt = [...upscale.select.options].find((o) => o.value === String(recipe.upscale) && !o.disabled);
        if (opt) upscale.select.value = opt.value;
        else recipe.notes.push(`It was upscaled ×${recipe.upscale}, and no super-resolution model for ×${recipe.upscale} is here.`);
      }
      if (recipe) note.textContent = ["Settings loaded from the PNG: press Generate to make it again.", ...recipe.notes].join(" ");
    }
  }

  let group = null;
  function setStyle(value) {
    style = value;
    if (group) group.select(value);
  }

  async function pickModel(name) {
    clearError(modelErr);
    const m = models.find((x) => x.name === name);
    if (!m) return;
    truncWrap.hidden = m.arch !== "stylegan";
    const names = m.styles.length > 1 ? m.styles : [];
    const choices = [{ value: null, label: "Any (by seed)" }, ...names.map((s) => ({ value: s, label: s }))];
    style = null;
    group = swatchGroup("Style", choices, (v) => { style = v; }, null);
    styleBox.replaceChildren(group.el);
    try {
      const { tiles } = await samplesSwatches(name, m.styles.length > 1 ? m.styles : [m.styles[0] || "only"]);
      for (const [s, c] of tiles) if (names.includes(s)) group.setPicture(s, c);
    } catch (e) {
      styleBox.append(h("p", { class: "hint" }, `(no style pictures: ${e.message})`));
    }
  }

  async function generate() {
    if (busy) return;
    clearError(genErr);
    const n = Math.max(1, Math.min(16, parseInt(count.value, 10) || 1));
    const base = parseInt(seed.input.value, 10);
    if (!Number.isInteger(base) || base < 0) { showError(genErr, new Error("the seed must be a whole number ≥ 0")); return; }
    busy = true;
    go.disabled = true;
    const model = modelSel.value;
    const truncation = truncWrap.hidden ? 1 : parseFloat(trunc.input.value);
    const factor = upscale.value();
    try {
      // One request per image, so each appears as soon as it is made.
      for (let i = 0; i < n; i++) {
        note.textContent = `Generating ${i + 1} of ${n}…`;
        const body = { model, n: 1, seed: base + i, truncation };
        if (style !== null) body.style = style;
        if (factor) body.upscale = factor;
        const img = await postImage("/api/generate", { json: body });
        urls.push(img.url);
        results.prepend(card(img, { model, style: img.headers.get("x-polychrome-style") || style, seed: base + i, truncation, upscale: factor }));
      }
      note.textContent = `Made ${n} image${n > 1 ? "s" : ""}.`;
    } catch (e) {
      showError(genErr, e);
      note.textContent = "";
    } finally {
      busy = false;
      go.disabled = false;
    }
  }

  function card(img, settings) {
    const meta = { model: settings.model, style: settings.style, seed: String(settings.seed) };
    const name = imageName(meta);
    return h("article", { class: "card" },
      h("img", { src: img.url, alt: `${settings.style || "image"}, seed ${settings.seed}` }),
      h("p", { class: "caption" }, `${settings.style || ""} · seed ${settings.seed}` +
        (settings.upscale ? ` · ×${settings.upscale}, ${img.headers.get("x-polychrome-width")} × ${img.headers.get("x-polychrome-height")} px` : "")),
      h("div", { class: "actions" },
        h("a", { class: "button secondary", href: img.url, download: name }, "Download"),
        h("button", { type: "button", class: "secondary", onclick: () => reuse(settings) }, "Reuse settings"),
        h("button", { type: "button", class: "secondary", onclick: () => { handoff.restyle = { blob: img.blob, name }; location.hash = "#/restyle"; } }, "Restyle this")));
  }

  async function reuse(s) {
    if (modelSel.value !== s.model) {
      modelSel.value = s.model;
      await pickModel(s.model);
    }
    seed.input.value = String(s.seed);
    count.value = "1";
    trunc.input.value = String(s.truncation);
    trunc.output.textContent = String(s.truncation);
    setStyle(s.style);
    note.textContent = `Settings of seed ${s.seed} loaded.`;
    go.focus();
  }

  load();
  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}
