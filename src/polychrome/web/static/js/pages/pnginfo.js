// PNG info: drop a picture Polychrome made; its text chunks (read here, in the browser) say
// what made it, and one button opens the page that makes it again with the form filled:
// Create (generate), Restyle (restyle), Blend (mix, interpolate) or Restore (sr, inpaint,
// colorize). Pictures a recipe needs but a PNG does not hold (the picture that was
// restyled, reference pictures) are named, to be dropped on that page again.
import { handoff, listModels } from "../state.js";
import { pngRecipe } from "../recipes.js";
import { readPngText } from "../pngtext.js";
import { clearError, dropZone, errorBox, h, metaTable, showError, status } from "../ui.js";

export function mount(root) {
  const urls = new Set();
  const zone = dropZone({ label: "Drop a PNG made by Polychrome here, or choose one", accept: "image/png", onFiles: (f) => show(f[0].file) });
  const err = errorBox();
  const out = h("section", { class: "panel", "aria-label": "What made this picture", hidden: true });
  root.append(h("h1", {}, "PNG info"),
    h("div", { class: "panel" },
      h("p", {}, "Every picture Polychrome makes carries its recipe (model, style, seed, strength…) inside the PNG file. Drop one to see it and to open it on the page that made it, with its settings filled in."),
      zone.el, err),
    out);

  let models = null;
  async function modelList() {
    if (!models) models = await listModels();
    return models;
  }

  async function show(file) {
    clearError(err);
    out.hidden = true;
    let meta;
    try {
      meta = await readPngText(file);
    } catch (e) {
      showError(err, new Error(`${file.name}: ${e.message}`));
      return;
    }
    const recipe = pngRecipe(meta);
    if (!recipe) {
      showError(err, new Error(`${file.name} carries no Polychrome recipe (no model in its text chunks): it was not made by Polychrome, or its metadata was stripped.`));
      return;
    }
    const url = URL.createObjectURL(file);
    urls.add(url);
    const notes = [...recipe.notes];
    try {
      const m = (await modelList()).find((x) => x.name === recipe.model);
      if (!m) notes.push(`This server has no model named ${recipe.model}: the page will say so.`);
      else if (meta.version && String(m.latest_version) !== String(meta.version)) {
        notes.push(`Made with version ${meta.version} of ${recipe.model}; the page uses the latest, version ${m.latest_version}.`);
      }
    } catch { /* the model check is a courtesy */ }
    const open = h("button", { type: "button", onclick: () => go(recipe) }, `Open in ${recipe.title}`);
    out.replaceChildren(
      h("h2", {}, file.name),
      h("div", { class: "dialog-body" },
        h("div", {}, h("img", { src: url, alt: `The dropped picture ${file.name}`, class: "big smooth" })),
        h("div", {},
          h("p", { class: "summary" }, recipe.summary),
          ...notes.map((n) => h("p", { class: "hint" }, n)),
          h("div", { class: "row" }, open),
          h("h3", {}, "Everything in the file"), metaTable(meta))));
    out.hidden = false;
    open.focus();
  }

  function go(recipe) {
    handoff.recipe = recipe;
    location.hash = recipe.hash;
  }

  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}
