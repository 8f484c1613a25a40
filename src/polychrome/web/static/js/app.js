// Entry point: a hash router over the pages, the API key field, the 401 banner.
import { getKey, onUnauthorized, setKey } from "./api.js";
import { parseHash } from "./ui.js";
import * as create from "./pages/create.js";
import * as restyle from "./pages/restyle.js";
import * as blend from "./pages/blend.js";
import * as restore from "./pages/restore.js";
import * as gallery from "./pages/gallery.js";
import * as datasets from "./pages/datasets.js";
import * as train from "./pages/train.js";
import * as models from "./pages/models.js";
import * as pnginfo from "./pages/pnginfo.js";

const PAGES = { create, restyle, blend, restore, gallery, datasets, train, models, pnginfo };
const TITLES = {
  create: "Create", restyle: "Restyle", blend: "Blend", restore: "Restore", gallery: "Gallery",
  datasets: "Datasets", train: "Train", models: "Models", pnginfo: "PNG info",
};

const view = document.getElementById("view");
const banner = document.getElementById("banner");
let cleanup = null;
let firstRender = true;

function route() {
  const { page, params } = parseHash();
  const name = PAGES[page] ? page : "create";
  if (cleanup) {
    try { cleanup(); } catch (e) { console.warn(e); }
    cleanup = null;
  }
  banner.hidden = true;
  view.replaceChildren();
  for (const a of document.querySelectorAll("nav a[data-page]")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${TITLES[name]} · Polychrome`;
  cleanup = PAGES[name].mount(view, params) || null;
  // Move focus to the new page for keyboard and screen-reader users (not on first load).
  if (!firstRender) view.focus();
  firstRender = false;
}

function setupKey() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const statusLine = document.getElementById("key-status");
  const box = document.getElementById("keybox");
  input.value = getKey();
  statusLine.textContent = getKey() ? "A key is saved." : "No key saved (not needed on a local server).";
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setKey(input.value.trim());
    statusLine.textContent = input.value.trim() ? "Key saved." : "Key removed.";
    box.open = false;
    route();
  });
  document.getElementById("key-clear").addEventListener("click", () => {
    input.value = "";
    setKey("");
    statusLine.textContent = "Key removed.";
  });
  onUnauthorized((message) => {
    banner.textContent = `${message} — enter the server's API key under "API key" (top right).`;
    banner.hidden = false;
    box.open = true;
  });
}

setupKey();
window.addEventListener("hashchange", route);
route();
