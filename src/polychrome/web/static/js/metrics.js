// A model's measured metrics (GET /api/models/{name} .metrics) as readable tables: names in
// words, whole numbers as whole numbers, fractions that are accuracies as percentages,
// per-style figures in one table with a row per style, and nested groups (the figures of a
// restoration benchmark, the goals) as tables of their own.
import { h } from "./ui.js";

const NAMES = {
  fid: "FID", fid_per_style: "FID", kid_mean: "KID", kid_per_style: "KID", kid_std: "KID spread (std. dev.)",
  precision: "Precision", recall: "Recall", n: "Images measured", seed: "Seed", split: "Split",
  extractor: "Feature extractor", at_initialisation: "At initialisation (untrained network)",
  style_accuracy: "Style accuracy", style_accuracy_ref: "Style accuracy (reference-guided)",
  identity_style_accuracy: "Kept the source's style",
  diversity_l1: "Diversity (L1 between seeds)", diversity_feat: "Diversity (feature distance)", n_diversity: "Pictures for diversity",
  identity_l1: "Change from the source (L1)", identity_feat: "Change from the source (features)", identity_ssim: "Similarity to the source (SSIM)",
  paired_l1: "Distance to the real drawing (L1)", paired_l1_ref: "Distance to the real drawing (L1, reference-guided)",
  paired_feat: "Distance to the real drawing (features)", paired_feat_ref: "Distance to the real drawing (features, reference-guided)",
  paired_ssim: "Similarity to the real drawing (SSIM)", paired_ssim_ref: "Similarity to the real drawing (SSIM, reference-guided)",
  n_pairs: "Pairs measured", n_ref_pairs: "Reference pairs measured",
  figures: "Figures", goals: "Goals", met: "Met", value: "Value", task: "Task", commit: "Commit", source: "Source",
  held_out_pictures: "Held-out pictures", p50_seconds_1mp: "Median seconds per megapixel",
  psnr_y: "PSNR of luma (dB)", ssim_y: "SSIM of luma", gain_db: "Gain (dB)",
  psnr_mask: "PSNR in the holes (dB)", l1_mask: "L1 in the holes", ab_error: "Colour error (ab)",
  colourfulness: "Colourfulness", colourfulness_ratio: "Colourfulness vs. real photos", luma_max_diff: "Largest luma change",
  ours: "This model", bicubic: "Bicubic", lanczos: "Lanczos", harmonic: "Harmonic fill", pyramid: "Pyramid fill",
  grey: "Grey", "mean chroma": "Mean chroma",
};
// The figures a versions table shows for each version, in this order, when measured.
const HEADLINE = ["fid", "kid_mean", "style_accuracy", "precision", "recall"];

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isScalar = (v) => !isObject(v);

/** "fid_per_style" -> "FID"; unknown keys in words: "lambda_ds" -> "Lambda ds". */
export function metricName(key) {
  if (NAMES[key]) return NAMES[key];
  if (/^x\d+$/.test(key)) return `×${key.slice(1)}`; // a super-resolution factor
  const words = String(key).replace(/_per_style$/, "").replace(/_/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** A value as a person reads it: 0 -> "0", 2000 -> "2,000", 0.77 (an accuracy) -> "77.1 %". */
export function formatMetric(key, v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (Array.isArray(v)) return v.map((x) => formatMetric(key, x)).join(", ");
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en");
  if (/accuracy/.test(key) && v >= 0 && v <= 1) return `${(v * 100).toFixed(1)} %`;
  return v.toLocaleString("en", { maximumSignificantDigits: 4 });
}

function kvTable(entries) {
  return h("table", { class: "metrics" }, h("tbody", {}, ...entries.map(([k, v]) => h("tr", {},
    h("th", { scope: "row" }, metricName(k)),
    h("td", { class: typeof v === "number" ? "num" : "" }, formatMetric(k, v))))));
}

/** Rows = `rowKeys` (styles, methods...), columns = the metrics given as {key: {row: value}}. */
function matrixTable(corner, rowKeys, columns, rowLabel = (r) => r) {
  return h("div", { class: "scroll" }, h("table", { class: "metrics matrix" },
    h("thead", {}, h("tr", {}, h("th", {}, corner), ...columns.map(([k]) => h("th", { class: "num" }, metricName(k))))),
    h("tbody", {}, ...rowKeys.map((r) => h("tr", {}, h("th", { scope: "row" }, rowLabel(r)),
      ...columns.map(([k, byRow]) => h("td", { class: "num" }, formatMetric(k, byRow[r]))))))));
}

function section(obj, styles, depth) {
  const out = [];
  const entries = Object.entries(obj);
  const scalars = entries.filter(([, v]) => isScalar(v));
  // {style: number} objects: one table with a row per style and a column per metric.
  const perStyle = entries.filter(([k, v]) => isObject(v) && Object.keys(v).length
    && Object.values(v).every(isScalar) && (k.endsWith("_per_style") || Object.keys(v).every((s) => styles.includes(s))));
  // {method: {metric: number}}: one table, a row per method (e.g. bicubic / lanczos / ours).
  const rest = entries.filter(([k, v]) => isObject(v) && !perStyle.some(([p]) => p === k));
  const flat = rest.filter(([, v]) => Object.keys(v).length && Object.values(v).every(isScalar));
  const nested = rest.filter(([k]) => !flat.some(([f]) => f === k));
  if (scalars.length) out.push(kvTable(scalars));
  if (perStyle.length) {
    const rows = [...new Set(perStyle.flatMap(([, v]) => Object.keys(v)))];
    out.push(h("p", { class: "caption" }, "Per style"), matrixTable("Style", rows, perStyle));
  }
  if (flat.length > 1) {
    const cols = [...new Set(flat.flatMap(([, v]) => Object.keys(v)))];
    const byCol = cols.map((c) => [c, Object.fromEntries(flat.map(([k, v]) => [k, v[c]]))]);
    out.push(matrixTable("", flat.map(([k]) => k), byCol, (k) => NAMES[k] || k));
  } else {
    nested.unshift(...flat);
  }
  for (const [k, v] of nested) {
    const heading = h(depth ? "h5" : "h4", {}, metricName(k));
    const body = Object.keys(v).length ? section(v, styles, depth + 1) : [h("p", { class: "empty" }, "none")];
    out.push(h("div", { class: "metric-group" }, heading, ...body));
  }
  return out;
}

/** The whole metrics object of a model version as tables. */
export function metricsView(metrics, styles = []) {
  return h("div", { class: "metrics-view" }, ...section(metrics || {}, styles, 0));
}

/** One line for a versions table: "FID 3.461 · KID 0.04805", else how many values exist. */
export function headline(metrics) {
  const parts = HEADLINE.filter((k) => typeof metrics[k] === "number")
    .map((k) => `${metricName(k)} ${formatMetric(k, metrics[k])}`);
  if (parts.length) return parts.join(" · ");
  const n = Object.keys(metrics).length;
  return n ? `${n} measured value${n > 1 ? "s" : ""}` : "—";
}
