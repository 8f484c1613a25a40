// What a training run logs (the trainers' `logs` keys), in words for the Train page.
// "Main" values are the ones the loss chart shows by default; the rest (penalties, the
// discriminator's raw scores, the reference-guided copies of a stargan's losses, schedule
// factors) are one checkbox away.

const NAMES = {
  loss_g: "Generator loss", loss_d: "Discriminator loss", w_dist: "Wasserstein distance (critic's estimate)",
  cyc: "Cycle (reconstruction) loss", l1: "L1 distance to the original", sty: "Style reconstruction loss",
  ds: "Diversity term", id: "Identity loss", idt: "Identity loss", pair: "Paired (ground truth) loss",
  r1: "R1 penalty", gp: "Gradient penalty", grad_norm: "Critic gradient norm",
  d_real: "Discriminator score, real", d_fake: "Discriminator score, generated",
  lambda_ds: "Diversity weight", lr_factor: "Learning-rate factor", scale: "Scale factor", aug_p: "Augmentation probability",
};
const MAIN = new Set(["loss_g", "loss_d", "w_dist", "cyc", "l1"]);
// Values that are settings of the run, not measurements: never drawn as a curve.
const SETTINGS = new Set(["lambda_ds", "lr_factor", "scale", "aug_p"]);

/** "ref_loss_g" -> "Generator loss (reference-guided)"; unknown keys in words. */
export function lossName(key) {
  const ref = key.startsWith("ref_");
  const base = ref ? key.slice(4) : key;
  let name = NAMES[base];
  if (!name) {
    const words = base.replace(/_/g, " ");
    name = words.charAt(0).toUpperCase() + words.slice(1);
  }
  return ref ? `${name} (reference-guided)` : name;
}

/** Whether the chart shows this key by default (the main losses of latent-guided steps). */
export const isMainLoss = (key) => MAIN.has(key);

/** Whether this key is a curve at all (a setting such as a weight schedule is not). */
export const isCurve = (key) => !SETTINGS.has(key.startsWith("ref_") ? key.slice(4) : key);
