"""`polychrome demo`: a showcase of the default models, written to a folder."""

from __future__ import annotations

import click

from .common import echo, emit_json, json_option
from .main import app

DEFAULT_TRANSLATOR = "emoji-stargan"
DEFAULT_SAMPLER = "emoji-stylegan"
DEFAULT_PHOTO = "photo-styles"
DEFAULT_RESTORERS = {"sr": "photo-sr", "inpaint": "photo-inpaint", "colorize": "photo-colorize"}
DEFAULT_UPSCALER = "emoji-sr"


@app.command("demo")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default="demo-out",
              show_default=True, help="Folder to write the showcase into.")
@click.option("--translator", default=DEFAULT_TRANSLATOR, show_default=True,
              help="Translation model (name, name:version or path).")
@click.option("--sampler", default=DEFAULT_SAMPLER, show_default=True,
              help="Noise → image model (name, name:version or path).")
@click.option("--photo-model", default=DEFAULT_PHOTO, show_default=True,
              help="Translator trained on crops: restyles an example photo at its own size "
                   "('' to skip).")
@click.option("--sr-model", default=DEFAULT_RESTORERS["sr"], show_default=True,
              help="Super-resolution model shown on the example photo ('' to skip).")
@click.option("--inpaint-model", default=DEFAULT_RESTORERS["inpaint"], show_default=True,
              help="Inpainting model shown on the example photo ('' to skip).")
@click.option("--colorize-model", default=DEFAULT_RESTORERS["colorize"], show_default=True,
              help="Colorization model shown on the example photo ('' to skip).")
@click.option("--upscaler", default=DEFAULT_UPSCALER, show_default=True,
              help="Super-resolution model that enlarges new samples ('' to skip).")
@click.option("--restore/--no-restore", "with_restore", default=True, show_default=True,
              help="Show the restoration models (all four above) or none of them.")
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
def demo(out_dir: str, translator: str, sampler: str, photo_model: str, sr_model: str,
         inpaint_model: str, colorize_model: str, upscaler: str, with_restore: bool,
         seed: int, as_json: bool) -> None:
    """Write a showcase of the default models: samples per style, a restyle grid,
    blend strips, an interpolation GIF, a photo restyled at its own size in every
    style, and the photo enlarged, filled in and coloured by the restoration models.
    Works offline on a fresh install."""
    from ..persistence.models import load_model
    from ..pipelines.showcase import write_showcase

    chosen = {"sr": sr_model, "inpaint": inpaint_model, "colorize": colorize_model}
    restorers = ({task: load_model(name) for task, name in chosen.items() if name}
                 if with_restore else {})
    result = write_showcase(out_dir, translator=load_model(translator),
                            sampler=load_model(sampler),
                            photo_model=load_model(photo_model) if photo_model else None,
                            restorers=restorers,
                            upscaler=load_model(upscaler) if with_restore and upscaler
                            else None,
                            seed=seed)
    if as_json:
        emit_json(result)
        return
    for f in result["files"]:
        echo(f"wrote {f}")
