"""`polychrome eval`: FID, KID and precision/recall of a trained model against a dataset;
paired metrics for translation models; true-photo figures with baselines for restoration."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo, emit_json, json_option
from .main import app


@app.command("eval")
@click.argument("model")
@click.option("--dataset", default=None,
              help="Dataset NAME or NAME:VERSION (default: the one the model was trained on).")
@click.option("--metrics", default="fid,kid", show_default=True,
              help="Comma-separated: fid, kid, pr (precision/recall, k=3).")
@click.option("--n", "n", type=int, default=5000, show_default=True,
              help="Number of generated samples.")
@click.option("--extractor", type=click.Choice(["offline", "inception"]), default="offline",
              show_default=True, help="Feature network (see above).")
@click.option("--inception-weights", type=click.Path(path_type=Path), default=None,
              help="Weights file of the standard FID Inception network (torch-fidelity's "
                   "weights-inception-2015-12-05-6726825d.pth); or set "
                   "POLYCHROME_INCEPTION_WEIGHTS. Never downloaded.")
@click.option("--split", type=click.Choice(["all", "heldout"]), default="all",
              show_default=True, help="Real images to compare with.")
@click.option("--fit", type=click.Choice(["crop", "pad"]), default=None,
              help="How real images are squared (default: as in the model's training run, "
                   "else crop).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Sampling seed (restoration: the seed of the inpainting masks).")
@click.option("--evaluator-steps", type=int, default=None,
              help="Training steps if the dataset's offline evaluator must be trained first "
                   "(a saved one under the bar is retrained when this is above its steps).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, mps ...")
@click.option("--no-record", is_flag=True, help="Do not write the result on the model card.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Restoration: a folder of photos the model never saw (default: the "
                   "held-out split of --dataset or of the model's training dataset).")
@click.option("--scale", "scales", type=int, multiple=True,
              help="Restoration sr: factor(s) to measure, repeatable (default: all the "
                   "model's).")
@click.option("--mean-chroma", default=None, metavar="A,B",
              help="Restoration colorize: the training photos' mean a*,b* for the "
                   "mean-chroma baseline (default: computed from --train-images or the "
                   "model's training dataset).")
@click.option("--train-images", type=click.Path(path_type=Path), default=None,
              help="Restoration colorize: the folder (searched recursively) of the "
                   "training photos to compute the mean chroma from.")
@json_option
def eval_cmd(model: str, dataset: str | None, metrics: str, n: int, extractor: str,
             inception_weights: Path | None, split: str, fit: str | None, seed: int,
             evaluator_steps: int | None, device: str, no_record: bool, images: Path | None,
             scales: tuple[int, ...], mean_chroma: str | None, train_images: Path | None,
             as_json: bool) -> None:
    """Measure MODEL (NAME, NAME:VERSION or a model directory) against a dataset's real images.

    \b
    Extractors:
      offline    a small CNN Polychrome trains once per dataset version and
                 resolution (style labels + rotation prediction) and then reuses.
                 Its numbers compare only with other offline numbers for the
                 same dataset version and resolution.
      inception  the standard FID network. ONLY these numbers compare with
                 published FID/KID values. Needs its weights file, given with
                 --inception-weights or POLYCHROME_INCEPTION_WEIGHTS.

    \b
    Restoration models (pix2pix: sr, inpaint, colorize) are measured on photos at
    their own size (--images DIR), each against two classical baselines:
      sr         Y-PSNR / Y-SSIM vs PIL bicubic and Lanczos, per --scale
      inpaint    PSNR / L1 inside free-form holes (fixed per photo and --seed)
                 vs the harmonic fill and the pyramid fill
      colorize   ab error and colourfulness vs mean chroma and grey

    \b
    Every figure comes with the quality of the instrument that measured it,
    checked in the same run on the dataset's held-out images: the evaluator's
    held-out accuracy (overall and per style), and FIDs between halves of the
    held-out set (the floor), against blurred, noised and other-style images,
    and against noise (the ceiling). Under the bar (settings
    eval_accuracy_margin, eval_min_accuracy, eval_min_separation) the command
    fails and nothing is recorded: train the evaluator longer with
    --evaluator-steps, or add images.

    Results of a registered model are recorded on its card (see `models show`).
    """
    from ..metrics.api import evaluate_model
    from ..metrics.instrument import format_instrument

    mean_ab = None
    if mean_chroma is not None:
        try:
            a, b = (float(v) for v in mean_chroma.split(","))
        except ValueError:
            raise click.BadParameter(f"expected A,B (two numbers), got {mean_chroma!r}",
                                     param_hint="--mean-chroma") from None
        mean_ab = (a, b)
    result = evaluate_model(
        model, dataset, metrics=metrics, n=n, extractor=extractor,
        inception_weights=inception_weights, split=split, fit=fit, seed=seed,
        evaluator_steps=evaluator_steps, device=device, record=not no_record,
        images=images, scales=list(scales) or None, mean_ab=mean_ab,
        train_images=train_images)
    if as_json:
        emit_json(result)
        return
    if "task" in result:  # a restoration model (metrics/restoration.py)
        from ..metrics.restoration import format_restoration

        for line in format_restoration(result):
            echo(line)
        return
    if "translation" in result:  # a translation model (metrics/translation.py)
        from ..metrics.translation import format_translation

        for line in format_translation(result):
            echo(line)
        return
    echo(f"{result['model']} vs {result['dataset']} ({result['split']}, {result['n']} generated, "
         f"{result['n_real']} real; extractor {result['extractor']})")
    m = result["metrics"]
    if "fid" in m:
        pos = m.get("fid_position")
        echo(f"  FID        {m['fid']:.4f}  (floor {m['fid_floor']:.4f} = real vs real, "
             f"ceiling {m['fid_ceiling']:.4f} = real vs noise; position "
             f"{'n/a' if pos is None else f'{pos:.3f}'}: 0 = floor, 1 = ceiling)")
    if "kid_mean" in m:
        echo(f"  KID        {m['kid_mean']:.6f} ± {m['kid_std']:.6f}")
    if "precision" in m:
        echo(f"  precision  {m['precision']:.4f}")
        echo(f"  recall     {m['recall']:.4f}")
    acc = result["sample_accuracy"]
    if acc:
        per_style = ", ".join(f"{k[len('sample_accuracy['):-1]} {v:.0%}"
                              for k, v in acc.items() if k != "sample_accuracy")
        echo(f"  samples recognised as their style {acc['sample_accuracy']:.1%} ({per_style})")
    for line in format_instrument(result["instrument"]):
        echo(line)
