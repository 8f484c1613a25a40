// Style swatches: real buttons (aria-pressed) with a picture of each style.
import { imageSrc } from "./api.js";
import { h } from "./ui.js";

const PAD = 2; // white pixels between tiles in /api/models/{name}/samples.png

/**
 * Build swatch buttons. styles: [{value, label}]; onPick(value) when one is chosen.
 * Returns {el, select(value), setPicture(value, canvasOrImg), value()}.
 */
export function swatchGroup(legend, styles, onPick, selected = null) {
  const buttons = new Map();
  const list = h("div", { class: "swatches", role: "group", "aria-label": legend });
  let current = selected;
  for (const s of styles) {
    const pic = h("canvas", { width: 48, height: 48, "aria-hidden": "true" });
    const btn = h("button", {
      type: "button", class: "swatch", "aria-pressed": String(s.value === selected),
      dataset: { style: s.value === null ? "" : String(s.value) },
      onclick: () => { select(s.value); onPick(s.value); },
    }, pic, h("span", {}, s.label));
    buttons.set(s.value, btn);
    list.append(btn);
  }
  function select(value) {
    current = value;
    for (const [v, b] of buttons) b.setAttribute("aria-pressed", String(v === value));
  }
  function setPicture(value, source) {
    const btn = buttons.get(value);
    if (!btn) return;
    const old = btn.querySelector("canvas, img");
    source.setAttribute("aria-hidden", "true");
    old.replaceWith(source);
  }
  function add(value, label, picture) {
    const btn = h("button", {
      type: "button", class: "swatch", "aria-pressed": "false", dataset: { style: String(value) },
      onclick: () => { select(value); onPick(value); },
    }, picture || h("canvas", { width: 48, height: 48, "aria-hidden": "true" }), h("span", {}, label));
    buttons.set(value, btn);
    list.append(btn);
    return btn;
  }
  const el = h("fieldset", {}, h("legend", {}, legend), list);
  return { el, select, setPicture, add, value: () => current, buttons };
}

/** Crop the first tile of each style's row from a model's samples grid into canvases. */
export async function samplesSwatches(model, styleNames) {
  const src = await imageSrc(`/api/models/${encodeURIComponent(model)}/samples.png?cols=4`);
  const img = new Image();
  img.src = src;
  await img.decode();
  const rows = Math.max(1, styleNames.length);
  const tile = Math.round((img.naturalHeight - PAD * (rows + 1)) / rows);
  const out = new Map();
  styleNames.forEach((name, i) => {
    const c = document.createElement("canvas");
    c.width = 48;
    c.height = 48;
    const ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, PAD, PAD + i * (tile + PAD), tile, tile, 0, 0, 48, 48);
    out.set(name, c);
  });
  return { tiles: out, gridUrl: src };
}
