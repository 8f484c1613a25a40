// Gallery: everything generated, newest first; open one for its metadata and regenerate it.
import { getJSON, postImage, request } from "../api.js";
import { pngRecipe } from "../recipes.js";
import { handoff, listModels } from "../state.js";
import {
  apiImg, clearError, downloadLink, errorBox, field, h, metaTable, showError, status,
} from "../ui.js";

const PAGE = 48;

export function mount(root, params) {
  const urls = [];
  let cursor = null;
  const modelSel = h("select", {}, h("option", { value: "" }, "All models"));
  const styleIn = h("input", { type: "text", placeholder: "e.g. ink", value: params.get("style") || "" });
  const listErr = errorBox();
  const grid = h("div", { class: "grid small", "aria-live": "polite", "aria-label": "Gallery images" });
  const more = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => page(false) }, "Load more");
  const note = status();
  const dialog = h("dialog", { "aria-labelledby": "img-title" });

  const filters = h("form", { class: "panel row", onsubmit: (e) => { e.preventDefault(); page(true); } },
    field("Model", modelSel), field("Style", styleIn, "Exact style, e.g. ink or 0.5*ink+0.5*neon"),
    h("button", { type: "submit" }, "Filter"));
  root.append(h("h1", {}, "Gallery"), filters, listErr, note, grid, h("div", { class: "row" }, more), dialog);
  modelSel.addEventListener("change", () => page(true));

  async function load() {
    try {
      for (const m of await listModels()) modelSel.append(h("option", { value: m.name }, m.name));
      if (params.get("model")) modelSel.value = params.get("model");
    } catch (e) { showError(listErr, e); }
    page(true);
  }

  async function page(reset) {
    clearError(listErr);
    if (reset) { cursor = null; grid.replaceChildren(); }
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (modelSel.value) q.set("model", modelSel.value);
    if (styleIn.value.trim()) q.set("style", styleIn.value.trim());
    if (cursor !== null) q.set("cursor", String(cursor));
    try {
      const out = await getJSON(`/api/images?${q}`);
      for (const im of out.items) grid.append(thumb(im));
      cursor = out.next_cursor;
      more.hidden = cursor === null;
      note.textContent = grid.children.length ? `${grid.children.length} image(s) shown, newest first.` : "Nothing here yet: make something on Create, Restyle or Blend.";
    } catch (e) { showError(listErr, e); }
  }

  function thumb(im) {
    const label = `${im.model} · ${im.style || ""} · seed ${im.seed ?? "?"}`;
    return h("button", { type: "button", class: "thumb", title: label, "aria-label": `Open image ${im.id}: ${label}`, dataset: { id: String(im.id) }, onclick: () => open(im) },
      apiImg(im.url, label, { loading: "lazy" }));
  }

  function open(im) {
    const err = errorBox();
    const regenNote = status();
    const regenImg = h("img", { class: "big", alt: "Regenerated image", hidden: true });
    const regenFig = h("figure", { hidden: true }, regenImg, h("figcaption", {}, "Regenerated from the metadata"));
    const meta = im.metadata || {};
    const actions = h("div", { class: "row" },
      downloadLink(im.url, `polychrome-${im.id}.png`),
      h("button", { type: "button", onclick: () => regenerate() }, "Regenerate"),
      h("button", { type: "button", class: "secondary", onclick: () => reuse() }, `Open in ${pngRecipe({ model: im.model, ...meta }).title}`),
      h("button", { type: "button", class: "danger", onclick: () => remove() }, "Delete"),
      h("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Close"));
    dialog.replaceChildren(
      h("h2", { id: "img-title" }, `Image ${im.id}`),
      h("div", { class: "dialog-body" },
        h("div", {}, apiImg(im.url, `${im.model} ${im.style || ""}`, { class: "big" }), regenFig),
        h("div", {}, h("p", {}, `${im.created} · ${im.width}×${im.height}`), metaTable(meta))),
      actions, err, regenNote);
    dialog.showModal();

    async function regenerate() {
      clearError(err);
      regenNote.textContent = "Regenerating from the metadata…";
      try {
        const out = await postImage(`/api/images/${im.id}/regenerate`);
        urls.push(out.url);
        regenImg.src = out.url;
        regenImg.hidden = false;
        regenFig.hidden = false;
        const same = out.headers.get("x-polychrome-identical") === "true";
        regenNote.textContent = same ? "Regenerated: identical, pixel for pixel (saved as a new gallery image)."
          : "Regenerated, but the pixels differ (different hardware or version?).";
      } catch (e) {
        regenNote.textContent = "";
        showError(err, e);
      }
    }

    // The page that made it, with its form filled from the metadata (as PNG info does).
    function reuse() {
      dialog.close();
      const recipe = pngRecipe({ model: im.model, ...meta });
      handoff.recipe = recipe;
      location.hash = recipe.hash;
    }

    async function remove() {
      clearError(err);
      try {
        await request(`/api/images/${im.id}`, { method: "DELETE" });
        dialog.close();
        grid.querySelector(`[data-id="${im.id}"]`)?.remove();
      } catch (e) { showError(err, e); }
    }
  }

  load();
  return () => {
    if (dialog.open) dialog.close();
    urls.forEach((u) => URL.revokeObjectURL(u));
  };
}
