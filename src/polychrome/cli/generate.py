"""`polychrome generate`: images from a trained noise model, with reproducible PNG metadata."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import (
    apply_upscale,
    echo,
    emit_json,
    json_option,
    load_upscaler,
    runtime_option,
    upscale_options,
)
from .main import app


@app.command("generate")
@click.argument("model")
@click.option("--n", "n", type=int, default=8, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Image i uses seed SEED+i, so any image can be regenerated alone.")
@click.option("--style", default=None,
              help="Style name or index (conditional models). Default: image i gets style "
                   "(SEED+i) mod number-of-styles.")
@click.option("--truncation", type=float, default=1.0, show_default=True,
              help="Truncation psi (models that support it, e.g. stylegan); 1 = off.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Output directory for the PNGs.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, mps ...")
@runtime_option
@upscale_options
@json_option
def generate_cmd(model: str, n: int, seed: int, style: str | None, truncation: float,
                 out_dir: Path, device: str, runtime: str, upscale: str | None,
                 upscaler: str | None, as_json: bool) -> None:
    """Generate N images with MODEL (a registered NAME, NAME:VERSION or a model directory).

    Each PNG carries its model, version, style, seed and truncation as text metadata.
    """
    from tqdm import tqdm

    from ..persistence.models import load_model
    from ..pipelines.generate import save_while_generating

    m = load_model(model, device=device, runtime=runtime)
    sr = load_upscaler(upscale, upscaler, device, m.style_names)
    finish = None if sr is None else (lambda im: apply_upscale([im], sr, upscale, device)[0])
    with tqdm(total=n, unit="img", desc="generating", file=sys.stderr,
              disable=as_json or not sys.stderr.isatty()) as bar:
        images, paths = save_while_generating(
            m, n, out_dir, finish=finish, seed=seed, style=style, truncation=truncation,
            device=device, progress=lambda done, total: bar.update(1))
    meta = images[0].metadata
    if as_json:
        emit_json({"images": [str(p) for p in paths], "model": meta["model"],
                   "version": meta["version"], "seed": seed, "n": n,
                   "styles": [im.metadata["style"] for im in images],
                   "truncation": truncation, "width": int(images[0].array.shape[1]),
                   "height": int(images[0].array.shape[0]),
                   "upscaled_by": meta.get("upscaled_by")})
    else:
        echo(f"wrote {len(paths)} image(s) from {meta['model']}"
             f"{':' + meta['version'] if meta['version'] else ''} to {out_dir}")
