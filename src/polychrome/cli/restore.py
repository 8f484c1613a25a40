"""`polychrome restore`: super-resolution, inpainting and colorization at the picture's size."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import PolychromeError
from .common import echo, emit_json, json_option, runtime_option
from .main import app


@app.command("restore")
@click.argument("model")
@click.argument("image")
@click.option("--task", type=click.Choice(["sr", "inpaint", "colorize"]), default=None,
              help="What to do (default: the model's own task; a different one is refused).")
@click.option("--scale", default=None,
              help="sr: the upscaling factor (one the model was trained for; default its "
                   "largest).")
@click.option("--mask", "mask", default=None, type=click.Path(dir_okay=False),
              help="inpaint: a picture of the same size, white where to fill in.")
@click.option("-o", "--out", "out", type=click.Path(path_type=Path), required=True,
              help="Output PNG file, or a directory (the PNG is named after IMAGE).")
@click.option("--device", default="cpu", show_default=True)
@runtime_option
@json_option
def restore_cmd(model: str, image: str, task: str | None, scale: str | None, mask: str | None,
                out: Path, device: str, runtime: str, as_json: bool) -> None:
    """Restore IMAGE with a restoration MODEL (pix2pix) at the picture's own size.

    sr makes it SCALE times larger, inpaint fills the white parts of --mask (the rest is
    kept byte for byte), colorize gives a grey picture colours (its brightness is kept).
    """
    from ..persistence.models import load_model
    from ..pipelines.restore import restore
    from ..pipelines.style import save_image

    if not Path(image).exists():
        raise PolychromeError(f"no such picture: {image}", code="not_found")
    if mask is not None and not Path(mask).exists():
        raise PolychromeError(f"no such mask: {mask}", code="not_found")
    if out.suffix.lower() == ".png":
        path = out
    elif out.suffix:
        raise PolychromeError(f"-o must name a .png file or a directory, got {out}",
                              code="bad_request")
    else:
        path = out / f"{Path(image).stem}-restored.png"
    t0 = time.perf_counter()
    result = restore(load_model(model, device=device, runtime=runtime), image, task=task, scale=scale, mask=mask, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(result, path)
    seconds = time.perf_counter() - t0
    meta = result.metadata
    h, w = result.array.shape[:2]
    if as_json:
        emit_json({"image": str(path), "model": meta["model"], "version": meta["version"],
                   "task": meta["task"], "scale": int(meta["scale"]), "width": int(w),
                   "height": int(h), "tiles": int(meta["tiles"]),
                   "seconds": round(seconds, 3), "input": image, "mask": mask})
        return
    echo(f"wrote {path} ({w}x{h}, {meta['task']} x{meta['scale']}) in {seconds:.1f} s")
