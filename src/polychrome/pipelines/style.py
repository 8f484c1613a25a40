"""Style operations — restyle, blend (mix), strength, per-layer mixing — for every surface.

The CLI, the REST API and the web page only parse inputs and call these; interpolation
animations (animate.py) and the style bank (stylebank.py) build on the same `Restyler`.

The style code is the currency (StarGAN v2, Choi et al. 2020): a style comes from the
mapping network (s = F(z, y), latent-guided), from a reference picture (s = E(ref, y)),
from the style bank, or from a blend s = sum_i w_i s_i (weights normalised to sum 1).
Strength alpha moves from the source's own code to the target: s = (1 - a) s_src + a s;
`pixel_blend` b additionally fades pixels: out = (1 - b) x + b G(x, s).

Real-time switching: `Restyler.set_image` encodes the content G.encode(x) once (an LRU
keyed by (model, sha256 of the pixels)); `render` then runs only the mapping / style
encoder and G.decode. A full restyle goes through exactly the same two calls (forward =
decode(encode(x))), so the cached path is bit-identical to the uncached one.

Reproducibility follows pipelines/generate.py: by default every image is its own
batch-of-one forward (`batch_size` > 1 batches pictures of one size: equal within float
tolerance, see restyle_batch.py); a latent-guided component with seed S draws z from
torch.Generator().manual_seed(S) on the CPU; variation k of a request with seed S uses seed S + k. Each image's metadata
holds a JSON `recipe` (resolved components, weights, strength, source style ...) that
`regenerate_style(metadata, source_image, references)` replays bit for bit.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import PolychromeError
from ..imageio import encode_png
from ..models.base import GANModel
from ..sampling import GeneratedImage
from ..utils.atomic import atomic_write_bytes, fsync_dir
from .generate import _slug
from .recipe import CONTENT_CACHE, ContentCache, Recipe, StyleLike, check_seed, summary
from .restyle_batch import Job, check_batch_size, render_jobs
from .restyler import Restyler
from .style_codes import Picture, load_picture, parse_weighted, require_translation

__all__ = ["CONTENT_CACHE", "ContentCache", "Picture", "Recipe", "Restyler", "load_picture",
           "mix", "parse_weighted", "regenerate_style", "restyle", "restyle_each", "save_image",
           "save_style_images", "style_filename", "summary"]

log = logging.getLogger(__name__)

WINDOW_BATCHES = 8  # restyle_each reads at most this many batches' worth of inputs at once


# -- one-call operations ----------------------------------------------------------------------
def restyle(model: GANModel | str, inputs: Sequence[Any], *, style: StyleLike | None = None,
            reference: Any | None = None, strength: float = 1.0, seed: int = 0,
            variations: int = 1, pixel_blend: float | None = None,
            source_style: str | int | None = None, device: str | torch.device = "cpu",
            progress: Callable[[int, int], None] | None = None,
            restyler: Restyler | None = None, size: int | str | None = None,
            batch_size: int = 1) -> list[GeneratedImage]:
    """Restyle each input into `style` (learned / bank / seed:N) or a `reference` picture.

    With both, `style` names the reference's style. Variation k uses seed `seed + k`.
    Images come input by input, variations inner. `size`: the working size of native
    models (None / "native" = each picture's own; N = longer side), see Restyler.
    `batch_size` > 1 runs the images in batches (restyle_batch.py: equal to the
    one-at-a-time render within float tolerance). The first bad input raises.
    """
    out: list[GeneratedImage] = []
    for result in restyle_each(model, inputs, style=style, reference=reference,
                               strength=strength, seed=seed, variations=variations,
                               pixel_blend=pixel_blend, source_style=source_style,
                               device=device, progress=progress, restyler=restyler, size=size,
                               batch_size=batch_size):
        if isinstance(result, PolychromeError):
            raise result
        out += result
    return out


def restyle_each(model: GANModel | str, inputs: Sequence[Any], *,
                 style: StyleLike | None = None, reference: Any | None = None,
                 strength: float = 1.0, seed: int = 0, variations: int = 1,
                 pixel_blend: float | None = None, source_style: str | int | None = None,
                 device: str | torch.device = "cpu",
                 progress: Callable[[int, int], None] | None = None,
                 restyler: Restyler | None = None, size: int | str | None = None,
                 batch_size: int = 1) -> list[list[GeneratedImage] | PolychromeError]:
    """`restyle`, with one result per input: its images, or the error that input alone
    raised (a picture that cannot be read). An error in what the whole request asks
    for (an unknown style, a bad option) still raises at once."""
    r = restyler or Restyler(model, device=device, size=size)
    require_translation(r.model, "restyle")
    if not inputs:
        raise PolychromeError("restyle needs at least one INPUT image", code="missing_input")
    if style is None and reference is None:
        raise PolychromeError("give a style (--style) or a reference picture (--reference)",
                              code="bad_request")
    if not isinstance(variations, int) or not 1 <= variations <= 1000:
        raise PolychromeError(f"variations must be an integer in 1..1000, got {variations!r}",
                              code="bad_request")
    check_seed(seed, variations)
    check_batch_size(batch_size)
    target = reference if reference is not None else style
    ref_style = style if reference is not None else None
    results: list[list[GeneratedImage] | PolychromeError] = [[] for _ in inputs]
    total, made = len(inputs) * variations, 0
    # Inputs are read a window at a time (WINDOW_BATCHES batches' worth of pictures or of
    # the tiling pixel budget): the source pictures of one window are held, not the whole
    # folder's, and each window is grouped into batches.
    max_inputs = WINDOW_BATCHES * batch_size
    max_pixels = WINDOW_BATCHES * r.tile_settings().max_pixels
    i = 0
    while i < len(inputs):
        jobs: list[Job] = []
        owner: list[int] = []  # input position of each job
        start, held = i, 0
        while i < len(inputs) and i - start < max_inputs and held < max_pixels:
            i += 1
            try:
                r.source = load_picture(r.model, inputs[i - 1], size=r.size)
            except PolychromeError as e:  # this input only
                results[i - 1] = e
                total -= variations
                continue
            held += r.source.array.shape[0] * r.source.array.shape[1]
            for k in range(variations):
                recipe = r.build([(target, 1.0)], op="restyle", seed=seed + k,
                                 strength=strength, pixel_blend=pixel_blend,
                                 reference_style=ref_style, source_style=source_style)
                if k == 0 and variations > 1 and all(c["kind"] != "latent"
                                                     for c in recipe.components):
                    raise PolychromeError("variations need a latent-guided style (a learned "
                                          "style name): a reference or saved style has no "
                                          "seed", code="bad_request")
                jobs.append(Job(r.source, recipe, index=made + len(jobs)))
                owner.append(i - 1)

        def step(done: int, _: int, before: int = made, total: int = total) -> None:
            if progress is not None:
                progress(before + done, total)

        images = render_jobs(r, jobs, batch_size=batch_size, progress=step)
        for pos, image in zip(owner, images, strict=True):
            results[pos].append(image)  # type: ignore[union-attr]
        made += len(images)
    return results


def mix(model: GANModel | str, styles: Sequence[tuple[StyleLike, float]], *,
        source: Any | None = None, seed: int = 0, crossover: int | None = None,
        strength: float = 1.0, pixel_blend: float | None = None,
        source_style: str | int | None = None, device: str | torch.device = "cpu",
        restyler: Restyler | None = None, size: int | str | None = None) -> GeneratedImage:
    """A blend of styles (weights normalised to sum 1), or a per-layer mix (stylegan).

    Translation models restyle `source` with the blended code; noise models generate.
    """
    r = restyler or Restyler(model, device=device, size=size)
    r.take_source(source, "mix", " (blend its learned styles)")
    recipe = r.build(list(styles), op="mix", seed=seed, strength=strength,
                     pixel_blend=pixel_blend, source_style=source_style, crossover=crossover)
    return r.run(recipe)


def regenerate_style(metadata: dict[str, str], source_image: Any | None = None,
                     references: Sequence[Any] = (), *, model: GANModel | str | None = None,
                     device: str | torch.device = "cpu") -> GeneratedImage:
    """The image described by `metadata` (from a GeneratedImage or a PNG), bit for bit.

    Needs the same source picture and every reference picture (checked by sha256).
    """
    if "recipe" not in metadata or "model" not in metadata:
        raise PolychromeError("image metadata lacks a style recipe: it was not made by "
                              "polychrome restyle / mix / interpolate", code="bad_metadata")
    recipe = Recipe.from_json(metadata["recipe"])
    if model is None:
        spec = metadata["model"]
        model = f"{spec}:{metadata['version']}" if metadata.get("version") else spec
    r = Restyler(model, device=device, size=metadata.get("size") or None)
    if r.model.family == "translation":
        if source_image is None:
            raise PolychromeError("this image restyled a source picture: pass it",
                                  code="missing_input")
        pic = r.set_image(source_image)
        if pic.sha256 != metadata.get("source_sha256"):
            raise PolychromeError("that is not the source picture of this image (its pixel "
                                  "sha256 differs)", code="wrong_source")
        if not r.native and metadata.get("width") and metadata.get("height"):
            # a whole model's drawing went back to the original's aspect: the same again
            r.source = dataclasses.replace(pic, aspect=(int(metadata["height"]),
                                                        int(metadata["width"])))
    for ref in references:
        r.add_reference(ref)
    missing = [c["sha256"][:12] for c in recipe.components
               if c["kind"] == "reference" and c["sha256"] not in r._pictures]
    if missing:
        raise PolychromeError(f"missing reference picture(s) with pixel sha256 "
                              f"{', '.join(missing)}…", code="missing_reference")
    return r.run(recipe, index=int(metadata.get("index", "0") or 0))


def style_filename(meta: dict[str, str], stem: str | None = None) -> str:
    """A file name that is a function of what defines the image (re-saving is idempotent)."""
    parts = [_slug(stem or Path(meta.get("model", "model")).name), meta.get("op", "style"),
             _slug(meta.get("style", ""))[:60], f"seed{meta.get('seed', '0')}"]
    if meta.get("strength", "1.0") != "1.0":
        parts.append(f"a{meta['strength']}")
    if meta.get("pixel_blend"):
        parts.append(f"px{meta['pixel_blend']}")
    if meta.get("op") == "interpolate" and "frame" in meta:
        parts.append(f"f{int(meta['frame']):04d}")
    return "-".join(parts) + ".png"


def save_style_images(images: Sequence[GeneratedImage], out_dir: str | Path,
                      stems: Sequence[str | None] | None = None) -> list[Path]:
    """Write PNGs with their metadata (atomically); `stems[i]` names image i's source."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i, im in enumerate(images):
        name = style_filename(im.metadata, stems[i] if stems else None)
        path = out_dir / name
        n = 1
        while path in paths:  # two inputs with the same file name from different folders
            path = out_dir / f"{Path(name).stem}-{n}.png"
            n += 1
        atomic_write_bytes(path, encode_png(im.array, im.metadata), sync_dir=False)
        paths.append(path)
    fsync_dir(out_dir)  # the renames, once
    log.info("wrote %d images to %s", len(paths), out_dir)
    return paths


def save_image(image: GeneratedImage, path: str | Path) -> Path:
    """Write one PNG (with metadata) at exactly `path`, atomically."""
    path = Path(path)
    atomic_write_bytes(path, encode_png(image.array, image.metadata))
    return path
