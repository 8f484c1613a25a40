// Restore: super-resolution, inpainting and colorization at the picture's own size
// (POST /api/restore, the pipeline `polychrome restore` uses). For inpainting the holes are
// painted on a canvas over the picture with a mouse, pen or finger (pointer events); the
// mask goes to the server as a PNG at the picture's own pixel size, white = fill. The result
// comes back at full size, is kept in the gallery and is compared on a before / after slider.
import { PICTURE_REFUSED, postImage } from "../api.js";
import { listModels } from "../state.js";
import { clearError, dropZone, errorBox, field, fillModels, h, showError, slider, status } from "../ui.js";

const TASKS = [
  { value: "sr2", task: "sr", scale: 2, label: "Super-resolution ×2" },
  { value: "sr4", task: "sr", scale: 4, label: "Super-resolution ×4" },
  { value: "inpaint", task: "inpaint", scale: 1, label: "Inpaint (fill in what you paint)" },
  { value: "colorize", task: "colorize", scale: 1, label: "Colorize" },
];
const HINTS = {
  sr: "The picture comes back this many times larger, sharpened by the model.",
  inpaint: "Paint over what should go; the model fills it in. Everything else is kept exactly.",
  colorize: "A grey (or colour) picture gets the model's colours; its brightness is kept.",
};
const PAINT = "#ff2d6f"; // the brush colour on screen; the mask sent is white on black

export function mount(root, params) {
  const models = [];
  const urls = new Set();
  let picture = null; // {blob, name, url, width, height}
  let painted = false;
  let drawing = null; // {id, x, y} of the pointer painting now
  let busy = false;

  const taskSel = h("select", {}, ...TASKS.map((t) => h("option", { value: t.value }, t.label)));
  const taskField = field("Task", taskSel, " ");
  const taskHint = taskField.querySelector(".hint");
  const modelSel = h("select", {});
  const modelErr = errorBox();
  const input = dropZone({ label: "Drop a picture here, or choose one", accept: "image/*", onFiles: (f) => setPicture(f[0].file, f[0].file.name) });
  const inputErr = errorBox();
  const brush = slider("Brush size", { min: 2, max: 80, step: 1, value: 18 });
  const clearBtn = h("button", { type: "button", class: "secondary", onclick: () => clearMask() }, "Clear mask");
  const paintTools = h("fieldset", { class: "paint-tools", hidden: true }, h("legend", {}, "Mask"), brush.el,
    h("p", { class: "hint" }, "Paint on the picture (mouse, pen or finger) over what should be filled in."),
    h("div", { class: "row" }, clearBtn));
  const go = h("button", { type: "submit" }, "Restore");
  const spinner = h("span", { class: "spinner", hidden: true, "aria-hidden": "true" });
  const note = status("Choose a picture to start.");
  const err = errorBox();

  // The picture, with the paint layer over it (same box; the canvas has the picture's pixels).
  const pictureImg = h("img", { alt: "The picture to restore", class: "smooth" });
  const canvas = h("canvas", { class: "paint-layer", hidden: true, role: "img", "aria-label": "Mask: the painted parts are filled in" });
  const pictureBox = h("div", { class: "paint", hidden: true }, pictureImg, canvas);
  const pictureCaption = h("p", { class: "hint" }, "No picture yet.");

  // Before / after: the result below, the picture on top, cut at the slider's position.
  const afterImg = h("img", { alt: "After: the restored picture", class: "smooth" });
  const beforeImg = h("img", { alt: "Before: the picture", class: "smooth before" });
  const divider = h("div", { class: "ba-divider", "aria-hidden": "true" });
  const compareBox = h("div", { class: "ba" }, afterImg, beforeImg, divider,
    h("span", { class: "ba-tag before-tag", "aria-hidden": "true" }, "Before"),
    h("span", { class: "ba-tag after-tag", "aria-hidden": "true" }, "After"));
  const position = slider("Before ◀ ▶ After", { min: 0, max: 100, step: 1, value: 50 });
  position.output.hidden = true; // the picture shows where the cut is
  const resultCaption = h("p", { class: "hint result-facts" });
  const download = h("a", { class: "button", href: "#", download: "restored.png" }, "Download");
  const saved = h("p", { class: "saved" });
  const resultBox = h("div", { class: "restore-result", hidden: true, "aria-live": "polite" },
    compareBox, position.el, resultCaption, h("div", { class: "row" }, download), saved);
  const emptyResult = h("p", { class: "empty" }, "The result appears here.");

  const form = h("form", { class: "panel", onsubmit: (e) => { e.preventDefault(); run(); } },
    taskField,
    field("Model", modelSel, "Restoration models of this task. Train one on the Train page (pix2pix)."), modelErr,
    input.el, inputErr,
    paintTools,
    h("div", { class: "row" }, go, spinner), note, err);
  const view = h("section", { class: "panel", "aria-label": "Picture and result" },
    h("h2", {}, "Picture"), pictureBox, pictureCaption,
    h("h2", {}, "Result"), emptyResult, resultBox);
  root.append(h("h1", {}, "Restore"), h("div", { class: "cols" }, form, view));

  taskSel.addEventListener("change", () => pickTask());
  position.input.addEventListener("input", () => setPosition(position.input.value));
  // Drag across the comparison itself (mouse or finger) to move the cut.
  compareBox.addEventListener("pointerdown", (e) => {
    try { compareBox.setPointerCapture(e.pointerId); } catch { /* a synthetic pointer */ }
    follow(e);
  });
  compareBox.addEventListener("pointermove", (e) => { if (compareBox.hasPointerCapture(e.pointerId)) follow(e); });
  function follow(e) {
    const r = compareBox.getBoundingClientRect();
    const v = Math.round(Math.max(0, Math.min(1, (e.clientX - r.left) / r.width)) * 100);
    position.input.value = String(v);
    position.output.textContent = String(v);
    setPosition(v);
  }
  function setPosition(v) { compareBox.style.setProperty("--pos", `${v}%`); }
  setPosition(50);

  function task() { return TASKS.find((t) => t.value === taskSel.value) || TASKS[0]; }
  const fits = (t) => (m) => m.family === "restoration" && m.task === t.task && (t.task !== "sr" || (m.scales || []).includes(t.scale));

  async function load() {
    try { models.push(...(await listModels())); } catch (e) { showError(modelErr, e); return; }
    const wanted = params.get("model");
    const m = wanted && models.find((x) => x.name === wanted && x.family === "restoration");
    if (m) { // the task asked for when this model does it (an sr model may do x2 and x4)
      const asked = TASKS.find((x) => x.value === params.get("task"));
      const t = asked && fits(asked)(m) ? asked : TASKS.find((x) => fits(x)(m));
      if (t) taskSel.value = t.value;
    } else if (TASKS.some((t) => t.value === params.get("task"))) {
      taskSel.value = params.get("task");
    }
    pickTask(wanted || "");
  }

  function pickTask(selected = modelSel.value) {
    const t = task();
    taskHint.textContent = HINTS[t.task];
    clearError(modelErr);
    const n = fillModels(modelSel, models, fits(t), selected);
    modelSel.disabled = !n;
    go.disabled = !n;
    if (!n) {
      modelErr.textContent = `No ${t.label.toLowerCase()} model yet: train pix2pix on the Train page (task ${t.task === "sr" ? `super-resolution, scale ${t.scale}` : t.task}).`;
    }
    const inpaint = t.task === "inpaint";
    paintTools.hidden = !inpaint;
    canvas.hidden = !inpaint;
    pictureImg.classList.toggle("grey", t.task === "colorize");
    describePicture();
  }

  function objectUrl(blob) {
    const u = URL.createObjectURL(blob);
    urls.add(u);
    return u;
  }

  async function setPicture(blob, name) {
    clearError(inputErr);
    clearError(err);
    const url = objectUrl(blob);
    const probe = new Image();
    probe.src = url;
    let shown = true;
    try {
      await probe.decode();
    } catch {
      shown = false; // no broken image on screen: the message says why
      showError(inputErr, new Error(`${name}: this browser cannot show the picture (the server may still read it)`));
    }
    picture = { blob, name: name || "picture.png", url, width: probe.naturalWidth || 0, height: probe.naturalHeight || 0 };
    pictureImg.src = url;
    pictureImg.alt = `The picture to restore: ${picture.name}`;
    canvas.width = Math.max(1, picture.width);
    canvas.height = Math.max(1, picture.height);
    for (const box of [pictureBox, compareBox]) box.style.setProperty("--aspect", String(canvas.width / canvas.height));
    painted = false;
    pictureBox.hidden = !shown;
    resultBox.hidden = true;
    emptyResult.hidden = false;
    describePicture();
    note.textContent = task().task === "inpaint" ? "Paint the parts to fill in, then Restore." : "Ready: press Restore.";
  }

  function describePicture() {
    if (!picture) return;
    const t = task();
    const out = `${picture.width * t.scale} × ${picture.height * t.scale}`;
    pictureCaption.textContent = `${picture.name}: ${picture.width} × ${picture.height} px` + (t.scale > 1 ? ` → ${out} px` : "");
  }

  // -- painting the mask ------------------------------------------------------------------------
  const ctx = canvas.getContext("2d");
  function at(e) {
    const r = canvas.getBoundingClientRect();
    return { x: (e.clientX - r.left) * (canvas.width / r.width), y: (e.clientY - r.top) * (canvas.height / r.height), k: canvas.width / r.width };
  }
  function stroke(a, b) {
    ctx.strokeStyle = PAINT;
    ctx.fillStyle = PAINT;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = Math.max(1, parseFloat(brush.input.value) * b.k);
    ctx.beginPath();
    if (a.x === b.x && a.y === b.y) {
      ctx.arc(b.x, b.y, ctx.lineWidth / 2, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.moveTo(a.x, a.y);
      ctx.lineTo(b.x, b.y);
      ctx.stroke();
    }
    painted = true;
  }
  canvas.addEventListener("pointerdown", (e) => {
    if (canvas.hidden || !picture || busy) return;
    e.preventDefault();
    try { canvas.setPointerCapture(e.pointerId); } catch { /* a synthetic pointer: no capture */ }
    const p = at(e);
    drawing = { id: e.pointerId, ...p };
    stroke(p, p);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing || drawing.id !== e.pointerId) return;
    const p = at(e);
    stroke(drawing, p);
    drawing = { id: e.pointerId, ...p };
  });
  const endStroke = (e) => {
    if (!drawing || drawing.id !== e.pointerId) return;
    drawing = null;
    note.textContent = "Mask painted: press Restore (or paint more).";
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  function clearMask() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    painted = false;
    note.textContent = picture ? "Mask cleared: paint the parts to fill in." : "";
  }

  /** The mask at the picture's own pixel size: white where painted, black elsewhere. */
  function maskBlob() {
    const w = canvas.width;
    const hh = canvas.height;
    const white = document.createElement("canvas");
    white.width = w;
    white.height = hh;
    const wc = white.getContext("2d");
    wc.drawImage(canvas, 0, 0);
    wc.globalCompositeOperation = "source-in"; // the painted pixels, in white
    wc.fillStyle = "#fff";
    wc.fillRect(0, 0, w, hh);
    const out = document.createElement("canvas");
    out.width = w;
    out.height = hh;
    const oc = out.getContext("2d");
    oc.fillStyle = "#000";
    oc.fillRect(0, 0, w, hh);
    oc.drawImage(white, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  // -- restoring ----------------------------------------------------------------------------------
  async function run() {
    if (busy) return;
    clearError(err);
    const t = task();
    if (!modelSel.value) { showError(err, new Error("no model for this task yet")); return; }
    if (!picture) { showError(err, new Error("choose a picture first")); return; }
    if (t.task === "inpaint" && !painted) { showError(err, new Error("paint the parts to fill in first (white = fill)")); return; }
    const body = new FormData();
    body.append("model", modelSel.value);
    body.append("task", t.task);
    if (t.task === "sr") body.append("scale", String(t.scale));
    body.append("image", picture.blob, picture.name);
    if (t.task === "inpaint") body.append("mask", await maskBlob(), "mask.png");
    busy = true;
    go.disabled = true;
    spinner.hidden = false;
    form.setAttribute("aria-busy", "true");
    const t0 = Date.now();
    const size = `${picture.width * t.scale} × ${picture.height * t.scale}`;
    const tick = () => { note.textContent = `Restoring (${t.label.toLowerCase()}), ${size} px… ${Math.round((Date.now() - t0) / 1000)} s`; };
    tick();
    const timer = setInterval(tick, 1000);
    try {
      const img = await postImage("/api/restore", { form: body });
      urls.add(img.url);
      show(img, t);
      note.textContent = "Done.";
    } catch (e) {
      note.textContent = "";
      showError(err, e);
      if (PICTURE_REFUSED.includes(e.code) || e.status === 413) { // the picture itself: off the screen
        picture = null;
        pictureBox.hidden = true;
        pictureCaption.textContent = "No picture: choose another one.";
      }
    } finally {
      clearInterval(timer);
      busy = false;
      go.disabled = !modelSel.value;
      spinner.hidden = true;
      form.removeAttribute("aria-busy");
    }
  }

  function show(img, t) {
    const hd = img.headers;
    const w = hd.get("x-polychrome-width");
    const hh = hd.get("x-polychrome-height");
    const tiles = parseInt(hd.get("x-polychrome-tiles") || "1", 10);
    const secs = parseFloat(hd.get("x-polychrome-seconds") || "");
    afterImg.src = img.url;
    afterImg.alt = `After: ${t.label.toLowerCase()} by ${hd.get("x-polychrome-model") || modelSel.value}, ${w} × ${hh} px`;
    afterImg.dataset.width = w;
    afterImg.dataset.height = hh;
    beforeImg.src = picture.url;
    beforeImg.classList.toggle("grey", t.task === "colorize");
    resultCaption.textContent = `${t.label.replace(/ \(.*\)$/, "")}: ${picture.width} × ${picture.height} → ${w} × ${hh} px` +
      `, ${tiles} tile${tiles === 1 ? "" : "s"}` + (isFinite(secs) ? `, ${secs.toFixed(2)} s` : "");
    const stem = (hd.get("x-polychrome-model") || "restored").replace(/[^A-Za-z0-9._-]+/g, "_");
    download.href = img.url;
    download.download = `${stem}-${t.task}${t.scale > 1 ? `-x${t.scale}` : ""}-${w}x${hh}.png`;
    download.textContent = `Download (${w} × ${hh} PNG)`;
    const id = hd.get("x-polychrome-image-id");
    saved.replaceChildren(...(id ? ["Saved in the ", h("a", { href: "#/gallery" }, "gallery"), ` as image ${id}.`] : []));
    saved.dataset.imageId = id || "";
    resultBox.hidden = false;
    emptyResult.hidden = true;
  }

  load();
  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}
