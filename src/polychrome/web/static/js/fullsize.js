// Full-size renders of a restyle session (the Restyle and Blend pages).
// A model trained on crops runs at the picture's own size: the page switches styles on a
// preview (longer side <= 512) and "Save" / "Download full size" render the same recipe at
// full size (POST /api/restyle/sessions/{id}/full), which the server saves to the gallery.
// A whole-picture model draws at its resolution either way; the page says so.
import { imageName, postImage } from "./api.js";
import { clearError, errorBox, field, h, showError, status } from "./ui.js";

export const SIZES = ["native", "2048", "1024", "512"];

/** "W × H" of a picture whose longer side becomes `side`, as the server resizes it. */
function scaled(w, h, side) {
  const f = side / Math.max(w, h);
  return [Math.max(1, Math.round(w * f)), Math.max(1, Math.round(h * f))];
}

const times = (w, h) => `${w} × ${h}`;
const xy = (text) => (text || "").replace("x", " × ");

/** What a rendered image is, from its X-Polychrome-* headers: "600 × 40 px, 3 tiles". */
export function sizeFacts(headers) {
  const w = headers.get("x-polychrome-width");
  const hh = headers.get("x-polychrome-height");
  const tiles = parseInt(headers.get("x-polychrome-tiles") || "1", 10);
  const size = headers.get("x-polychrome-size");
  const drawn = headers.get("x-polychrome-drawn-at");
  const parts = [`${times(w, hh)} px`];
  if (size) parts.push(tiles > 1 ? `${tiles} tiles` : "1 tile");
  else if (drawn) parts.push(`drawn at ${xy(drawn)}, the model's resolution`);
  return parts.join(", ");
}

/** The caption of a preview: what the picture on screen is, and what a full render gives. */
export function previewCaption(session, headers) {
  const w = headers.get("x-polychrome-width");
  const hh = headers.get("x-polychrome-height");
  if (!session.native) {
    const drawn = xy(headers.get("x-polychrome-drawn-at"));
    return `Drawn at ${drawn} (this model's resolution, not the picture's), shown at ${times(w, hh)}`;
  }
  const full = fullDims(session, "native");
  if (parseInt(w, 10) === full[0] && parseInt(hh, 10) === full[1]) return `Full size ${times(w, hh)}`;
  return `Preview ${times(w, hh)} of ${times(...full)}`;
}

function fullDims(session, size) {
  const w = session.width;
  const hh = session.height;
  if (size === "native") {
    const cap = session.max_side || Math.max(w, hh);
    return Math.max(w, hh) > cap ? scaled(w, hh, cap) : [w, hh];
  }
  return scaled(w, hh, parseInt(size, 10));
}

/**
 * The "Full size" controls: a size selector, Save, Download full size, a spinner while it
 * renders and what came back. `request()` gives the session's current render body
 * ({style} or {weights}, strength, seed, ...) or null when there is nothing to render yet.
 * `upscale` (an upscaleField from ui.js, optional) hands the render to a super-resolution
 * model in the same request.
 */
export function fullSizeControls({ request, upscale = null }) {
  let session = null;
  let last = null; // {key, img} of the last full render (a second click reuses it)
  let busy = false;
  const urls = new Set();
  const sizeSel = h("select", {});
  const sizeField = field("Size", sizeSel, " ");
  const hint = sizeField.querySelector(".hint");
  const wholeHint = h("p", { class: "hint" });
  const legend = h("legend", {}, "Full size");
  const saveBtn = h("button", { type: "button", onclick: () => run(false) }, "Save");
  const dlBtn = h("button", { type: "button", class: "secondary", onclick: () => run(true) }, "Download full size");
  const spinner = h("span", { class: "spinner", hidden: true, "aria-hidden": "true" });
  const note = status();
  const err = errorBox();
  const el = h("fieldset", { class: "fullsize", hidden: true },
    legend, sizeField, wholeHint, upscale ? upscale.el : null,
    h("div", { class: "row" }, saveBtn, dlBtn, spinner),
    note, err);

  function setSession(s) {
    session = s;
    last = null;
    clearError(err);
    note.textContent = "";
    el.hidden = !s;
    if (!s) return;
    sizeSel.replaceChildren(...SIZES.map((v) => {
      const dims = fullDims(s, v);
      const label = v === "native" ? `Native (${times(...dims)})` : `${v} (${times(...dims)})`;
      const tooBig = s.max_side && v !== "native" && parseInt(v, 10) > s.max_side;
      return h("option", { value: v, disabled: tooBig || undefined }, label);
    }));
    // A whole-picture model has no size to choose: it draws at its resolution.
    sizeField.hidden = !s.native;
    wholeHint.hidden = s.native;
    legend.textContent = s.native ? "Full size" : "Keep this result";
    dlBtn.textContent = s.native ? "Download full size" : "Download";
    hint.textContent = "Styles switch on a small preview; Save and Download render the same style at this size.";
    wholeHint.textContent = `This model draws whole pictures at ${s.resolution} × ${s.resolution}, whatever the picture's size: Save and Download keep that drawing, at the picture's aspect.`;
  }

  function size() { return session && session.native ? sizeSel.value : "native"; }

  async function run(download) {
    clearError(err);
    if (busy) return;
    const body = session && request();
    if (!body) { showError(err, new Error("choose a picture and a style first")); return; }
    const full = { ...body, size: size(), save: true };
    const factor = upscale ? upscale.value() : null;
    if (factor) full.upscale = factor;
    const key = `${session.session}|${JSON.stringify(full)}`;
    let img = last && last.key === key ? last.img : null;
    if (!img) {
      let dims = session.native ? times(...fullDims(session, full.size)) : `${session.resolution} × ${session.resolution}`;
      if (factor) dims += `, then ×${factor}`;
      busy = true;
      saveBtn.disabled = dlBtn.disabled = true;
      spinner.hidden = false;
      el.setAttribute("aria-busy", "true");
      const t0 = Date.now();
      const tick = () => { note.textContent = `Rendering ${dims}… ${Math.round((Date.now() - t0) / 1000)} s`; };
      tick();
      const timer = setInterval(tick, 1000);
      try {
        img = await postImage(`/api/restyle/sessions/${session.session}/full`, { json: full });
        urls.add(img.url);
        last = { key, img };
      } catch (e) {
        note.textContent = "";
        showError(err, e);
        return;
      } finally {
        clearInterval(timer);
        busy = false;
        saveBtn.disabled = dlBtn.disabled = false;
        spinner.hidden = true;
        el.removeAttribute("aria-busy");
      }
    }
    const id = img.headers.get("x-polychrome-image-id");
    const saved = id ? ` — gallery image ${id}` : "";
    note.textContent = `Saved ${sizeFacts(img.headers)}${saved}.`;
    note.dataset.width = img.headers.get("x-polychrome-width") || "";
    note.dataset.height = img.headers.get("x-polychrome-height") || "";
    if (download) {
      const hd = img.headers;
      const stem = imageName({ model: hd.get("x-polychrome-model"), op: hd.get("x-polychrome-op"), style: (hd.get("x-polychrome-style") || "").startsWith("ref:") ? "ref" : hd.get("x-polychrome-style"), seed: hd.get("x-polychrome-seed") }).replace(/\.png$/, "");
      const a = h("a", { href: img.url, download: `${stem}-${hd.get("x-polychrome-width")}x${hd.get("x-polychrome-height")}.png`, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
    }
  }

  return {
    el,
    setSession,
    size,
    dispose: () => urls.forEach((u) => URL.revokeObjectURL(u)),
  };
}
