// Shared page state: hand-offs between pages ("restyle this", "reuse settings"), kept in
// memory only, and the model list.
import { getJSON } from "./api.js";

export const handoff = {
  restyle: null, // {blob, name} -> the Restyle page's input picture
  create: null, // {model, style, seed, truncation} -> the Create page's form
  recipe: null, // a dropped PNG's recipe (recipes.js pngRecipe) -> the form of its page
};

/** The recipe handed to `page` (once), or null. */
export function takeRecipe(page) {
  const r = handoff.recipe;
  if (!r || r.page !== page) return null;
  handoff.recipe = null;
  return r;
}

export async function listModels() {
  return (await getJSON("/api/models")).items;
}

export async function showModel(name) {
  return getJSON(`/api/models/${encodeURIComponent(name)}`);
}
