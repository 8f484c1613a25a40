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


def write_showcase(out_dir: str | Path, *, translator: GANModel | None,
                   sampler: GANModel | None, photo_model: GANModel | None = None,
                   seed: int = 0) -> dict:
    """Write the showcase files into `out_dir`; returns {"files": [...], ...}."""
    if translator is None and sampler is None and photo_model is None:
        raise PolychromeError("the showcase needs at least one model", code="bad_request")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    notes: list[str] = ["Polychrome showcase", ""]

    if sampler is not None:
        files.append(str(_write_png(out / "samples.png", samples_grid(sampler, seed=seed))))
        notes.append(f"samples.png      new images from {sampler.meta.get('name', sampler.name)}"
                     f" — one row per style (seeds {seed}..{seed + 7})")
        styles = sampler.style_names
        if len(styles) >= 2:
            files.append(str(_write_png(out / "sampler-blend.png",
                                        blend_strip(sampler, None, styles[0], styles[1],
                                                    seed=seed))))
            notes.append(f"sampler-blend.png  the same seed blended from {styles[0]} to "
                         f"{styles[1]}")

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
                     f"by {photo_model.meta.get('name', photo_model.name)} into "
                     f"{', '.join(n for n, _ in outs)}; photo-styles.png side by side")

    notes.append("")
    notes.append("Every PNG made by `polychrome generate/restyle/mix` carries metadata that "
                 "regenerates it bit for bit.")
    atomic_write_text(out / "README.txt", "\n".join(notes) + "\n")
    files.append(str(out / "README.txt"))
    log.info("wrote showcase to %s", out)
    return {"out_dir": str(out), "files": files}
