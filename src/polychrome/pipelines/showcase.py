"""The showcase `polychrome demo` writes: what the default models can do, without a server.

Every picture here comes from the same pipelines the CLI, REST API and page use
(generate, restyle, mix, interpolate); this module only lays the results out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import PolychromeError
from ..imageio import decode_image, encode_png
from ..models.base import GANModel
from ..utils.atomic import atomic_write_bytes, atomic_write_text
from ..utils.grid import labelled_grid
from .animate import interpolate, write_animation
from .generate import generate
from .style import Restyler, mix, restyle

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"


def example_pictures(kind: str = "source") -> list[Path]:
    """Pictures shipped for demos (held out of the default models' training):
    `source-*.png` to restyle and `reference-*.png` to take a style from."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(EXAMPLES_DIR.glob(f"{kind}-*.png"))


def _name(model: GANModel) -> str:
    """The model's registered name (or its directory), as the notes should say it."""
    from ..sampling import model_identity

    return model_identity(model)[0]


def _write_png(path: Path, arr: np.ndarray) -> Path:
    atomic_write_bytes(path, encode_png(arr))
    return path


def samples_grid(model: GANModel, *, per_style: int = 8, seed: int = 0) -> np.ndarray:
    """One row per learned style of a noise → image model; image i uses seed seed+i."""
    rows = []
    for name in model.style_names:
        images = generate(model, per_style, seed=seed, style=name)
        rows.append((name, [im.array for im in images]))
    return labelled_grid(rows, cell=64)


def restyle_grid(model: GANModel, sources: list[np.ndarray], *, seed: int = 0,
                 reference: np.ndarray | None = None) -> np.ndarray:
    """Source row, one row per style, and (optionally) a row restyled like `reference`."""
    r = Restyler(model)
    rows = [("source", sources)]
    for name in model.style_names:
        rows.append((name, [restyle(model, [s], style=name, seed=seed, restyler=r)[0].array
                            for s in sources]))
    if reference is not None:
        rows.append(("like reference", [
            restyle(model, [s], reference=reference, restyler=r)[0].array for s in sources]))
    return labelled_grid(rows, cell=64)


def blend_strip(model: GANModel, source: np.ndarray | None, a: str, b: str, *,
                steps: int = 7, seed: int = 0) -> np.ndarray:
    """Weights from all-`a` to all-`b` in `steps` steps (a row of blends)."""
    r = Restyler(model)
    images = []
    for i in range(steps):
        w = i / (steps - 1)
        styles = [(a, 1.0 - w), (b, w)] if 0 < w < 1 else [(a if w == 0 else b, 1.0)]
        images.append(mix(model, styles, source=source, seed=seed, restyler=r).array)
    return labelled_grid([(f"{a} -> {b}", images)], cell=64)


def photo_restyles(model: GANModel, photo: np.ndarray, *,
                   seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """The photo restyled at its own size into every style of a native (crops-mode) model."""
    r = Restyler(model)
    return [(name, restyle(model, [photo], style=name, seed=seed, restyler=r)[0].array)
            for name in model.style_names]


def restoration_cases(photo: np.ndarray, models: dict[str, GANModel]
                      ) -> list[tuple[str, str, list[np.ndarray]]]:
    """The example photo through each restoration model: (file stem, note, row of pictures).

    sr: the photo made 4x smaller (as training does), enlarged by bicubic and by the model,
    beside the photo itself; inpaint: a box and a stroke painted out and filled in;
    colorize: its grey version given colours back.
    """
    from PIL import Image, ImageDraw

    from ..data.degrade import downscale, quantize
    from ..imageio import from_tensor, to_tensor
    from .restore import grey_u8, model_scales, restore

    cases = []
    h, w = photo.shape[:2]
    if "sr" in models:
        s = max(model_scales(models["sr"]))
        small = from_tensor(quantize(downscale(to_tensor(photo)[None], s))[0])
        big = restore(models["sr"], small, scale=s).array
        bicubic = np.asarray(Image.fromarray(small).resize((big.shape[1], big.shape[0]),
                                                            Image.Resampling.BICUBIC))
        cases.append((f"restore-sr-x{s}", f"the photo made {s}x smaller "
                      f"({small.shape[1]}x{small.shape[0]}), enlarged by bicubic and by "
                      f"{_name(models['sr'])}, beside the photo",
                      [bicubic, big, photo[:big.shape[0], :big.shape[1]]]))
    if "inpaint" in models:
        m = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(m)
        d.rectangle([w * 0.55, h * 0.15, w * 0.8, h * 0.4], fill=255)
        d.line([(w * 0.1, h * 0.8), (w * 0.35, h * 0.6), (w * 0.5, h * 0.85)], fill=255,
               width=max(4, h // 25))
        holes = np.asarray(m) > 127
        painted = photo.copy()
        painted[holes] = (255, 255, 255)
        filled = restore(models["inpaint"], photo, mask=holes).array
        cases.append(("restore-inpaint", "a box and a stroke painted out (white) and filled "
                      "in; every other pixel is kept", [painted, filled]))
    if "colorize" in models:
        grey = grey_u8(photo)
        coloured = restore(models["colorize"], grey).array
        cases.append(("restore-colorize", "the photo in grey, given colours back, beside the "
                      "real colours", [grey, coloured, photo]))
    return cases


def write_showcase(out_dir: str | Path, *, translator: GANModel | None,
                   sampler: GANModel | None, photo_model: GANModel | None = None,
                   restorers: dict[str, GANModel] | None = None, upscaler: GANModel | None = None,
                   seed: int = 0) -> dict:
    """Write the showcase files into `out_dir`; returns {"files": [...], ...}.

    restorers: {"sr" | "inpaint" | "colorize": model} shown on the example photo;
    upscaler: an sr model that also enlarges the sampler's grid of new images.
    """
    restorers = restorers or {}
    if translator is None and sampler is None and photo_model is None and not restorers:
        raise PolychromeError("the showcase needs at least one model", code="bad_request")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    notes: list[str] = ["Polychrome showcase", ""]

    if sampler is not None:
        files.append(str(_write_png(out / "samples.png", samples_grid(sampler, seed=seed))))
        notes.append(f"samples.png      new images from {_name(sampler)}"
                     f" — one row per style (seeds {seed}..{seed + 7})")
        styles = sampler.style_names
        if len(styles) >= 2:
            files.append(str(_write_png(out / "sampler-blend.png",
                                        blend_strip(sampler, None, styles[0], styles[1],
                                                    seed=seed))))
            notes.append(f"sampler-blend.png  the same seed blended from {styles[0]} to "
                         f"{styles[1]}")
        if upscaler is not None:
            from .restore import model_scales, upscale

            s = max(model_scales(upscaler))
            images = generate(sampler, len(styles), seed=seed)
            big = [upscale(upscaler, im, s).array for im in images]
            files.append(str(_write_png(out / f"samples-x{s}.png", labelled_grid(
                [(f"{_name(sampler)} x{s}", big)],
                cell=big[0].shape[0]))))
            notes.append(f"samples-x{s}.png  one new image per style, drawn at "
                         f"{images[0].array.shape[0]} px and enlarged {s}x by "
                         f"{_name(upscaler)} in the same call")

    if translator is not None:
        pictures = example_pictures("source")
        if not pictures:
            raise PolychromeError("no example pictures are installed (polychrome/assets/"
                                  "examples)", code="missing_examples")
        sources = [decode_image(p) for p in pictures[:6]]
        refs = example_pictures("reference")
        reference = decode_image(refs[0]) if refs else None
        files.append(str(_write_png(out / "restyle.png",
                                    restyle_grid(translator, sources, seed=seed,
                                                 reference=reference))))
        notes.append("restyle.png      example pictures (top row) redrawn in every style; "
                     "last row: in the style of a reference picture")
        styles = translator.style_names
        a, b = styles[0], styles[-1]
        files.append(str(_write_png(out / "blend.png",
                                    blend_strip(translator, sources[0], a, b, seed=seed))))
        notes.append(f"blend.png        one picture restyled with weights from {a} to {b}")
        frames = interpolate(translator, a, b, source=sources[0], frames=16, seed=seed,
                             pingpong=True)
        info = write_animation(frames, out / "interpolation.gif", fps=12, scale=4)
        files.append(str(info["path"]))
        notes.append(f"interpolation.gif  {a} -> {b} -> {a}")

    if photo_model is not None:
        photos = example_pictures("photo")
        if not photos:
            raise PolychromeError("no example photo is installed (polychrome/assets/examples)",
                                  code="missing_examples")
        photo = decode_image(photos[0])
        outs = photo_restyles(photo_model, photo, seed=seed)
        h, w = photo.shape[:2]
        for name, arr in outs:
            files.append(str(_write_png(out / f"photo-{name}.png", arr)))
        cell = max(64, min(256, max(h, w)))
        files.append(str(_write_png(out / "photo-styles.png", labelled_grid(
            [("photo", [photo] + [a for _, a in outs])], cell=cell))))
        notes.append(f"photo-<style>.png  {photos[0].name} ({w}x{h}) restyled at its own size "
                     f"by {_name(photo_model)} into "
                     f"{', '.join(n for n, _ in outs)}; photo-styles.png side by side")

    if restorers:
        photos = example_pictures("photo")
        if not photos:
            raise PolychromeError("no example photo is installed (polychrome/assets/examples)",
                                  code="missing_examples")
        photo = decode_image(photos[0])
        for stem, note, row in restoration_cases(photo, restorers):
            cell = max(64, min(320, max(row[-1].shape[:2])))
            files.append(str(_write_png(out / f"{stem}.png", labelled_grid(
                [(stem.removeprefix("restore-"), row)], cell=cell))))
            notes.append(f"{stem}.png  {note}")

    notes.append("")
    notes.append("Every PNG made by `polychrome generate/restyle/mix` carries metadata that "
                 "regenerates it bit for bit.")
    atomic_write_text(out / "README.txt", "\n".join(notes) + "\n")
    files.append(str(out / "README.txt"))
    log.info("wrote showcase to %s", out)
    return {"out_dir": str(out), "files": files}
