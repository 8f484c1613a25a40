"""`polychrome restyle | mix | interpolate | styles`: the style operations on the command line.

Thin wrappers: parse inputs, call polychrome.pipelines.style / animate / stylebank.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import PolychromeError
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

STYLE_HELP = ("a learned style (name or index), a saved style (bank:NAME, or NAME when no "
              "learned style has that name), seed:N, or an image path (a reference)")


def _bar(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty())


def _restyler(model: str, device: str, size: str | None = None, runtime: str = "torch"):
    from ..persistence.models import load_model
    from ..pipelines.restyler import Restyler

    return Restyler(load_model(model, device=device, runtime=runtime), device=device, size=size)


SIZE_HELP = ("Working size of models trained on crops: 'native' (default: the picture's own "
             "size, capped by POLYCHROME_NATIVE_MAX_SIDE) or N, the longer side in pixels. "
             "Whole-picture models draw at their resolution and give it back at the "
             "picture's aspect.")


def _size_facts(images: list, seconds: float) -> dict[str, Any]:
    """width / height / tiles of the first image, what the model drew, and the time taken."""
    meta = images[0].metadata
    return {"width": int(images[0].array.shape[1]), "height": int(images[0].array.shape[0]),
            "tiles": int(meta.get("tiles", "1") or 1), "drawn_at": meta.get("drawn_at", ""),
            "size": meta.get("size") or None, "seconds": round(seconds, 3),
            "upscaled_by": meta.get("upscaled_by")}


def _check_save_name(r: Any, name: str | None) -> None:
    """Fail before any work if --save-style cannot succeed."""
    if name is None:
        return
    from ..pipelines import stylebank

    stylebank.validate_bank_name(name)
    if stylebank.code_kind(r.model) is None:
        raise PolychromeError(f"{r.model.name} has no style codes to save (--save-style needs a "
                              "stargan or stylegan)", code="unsupported")
    if stylebank.has_style(r.model, name):
        raise PolychromeError(f"style bank entry {name!r} already exists for "
                              f"{stylebank.bank_key(r.model)}; remove it first (polychrome "
                              f"styles remove {stylebank.bank_key(r.model)} {name})",
                              code="exists")


def _save_from(r: Any, name: str | None, metadata: dict[str, str]) -> dict | None:
    if name is None:
        return None
    from ..pipelines.recipe import Recipe

    return r.save_style(name, Recipe.from_json(metadata["recipe"]))


def _model_label(meta: dict[str, str]) -> str:
    return meta["model"] + (f":{meta['version']}" if meta["version"] else "")


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def _expand_inputs(inputs: tuple[str, ...]) -> list[str]:
    """Files as given; a folder gives its pictures (by suffix, not hidden), sorted by name."""
    out: list[str] = []
    for text in inputs:
        path = Path(text)
        if not path.is_dir():
            out.append(text)
            continue
        found = sorted(str(p) for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in PICTURE_SUFFIXES)
        if not found:
            raise PolychromeError(f"{text} holds no pictures ({', '.join(PICTURE_SUFFIXES)})",
                                  code="missing_input")
        out += found
    return out


@app.command("restyle")
@click.argument("model")
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("--style", default=None, help=f"Target style: {STYLE_HELP}. With --reference: "
              "the reference's style (default: guessed by the dataset's offline evaluator "
              "when one is trained, else the style whose code best reconstructs the "
              "reference; the choice is recorded in the PNG metadata).")
@click.option("--reference", default=None, help="Reference picture whose style to copy.")
@click.option("--strength", type=float, default=1.0, show_default=True,
              help="0 = the input's own style code, 1 = the target's (interpolated between).")
@click.option("--pixel-blend", type=float, default=None,
              help="Also fade pixels: out = (1-B) input + B restyled.")
@click.option("--source-style", default=None,
              help="Style of the INPUTs, for --strength < 1 (default: guessed).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Latent seed; variation k uses SEED+k.")
@click.option("--variations", type=int, default=1, show_default=True,
              help="Images per input (different seeds).")
@click.option("--size", default=None, help=SIZE_HELP)
@click.option("--batch", "batch_size", type=int, default=32, show_default=True,
              help="Pictures of the same size per forward. Batched results equal the "
                   "one-at-a-time ones within float tolerance (now and then one step of "
                   "255); --batch 1 renders each alone, bit for bit as the recipe replays.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Output directory for the PNGs, or OUT.png for a single image.")
@click.option("--save-style", default=None,
              help="Save the target style code (variation 0) in the style bank as NAME.")
@click.option("--device", default="cpu", show_default=True)
@runtime_option
@upscale_options
@json_option
def restyle_cmd(model: str, inputs: tuple[str, ...], style: str | None, reference: str | None,
                strength: float, pixel_blend: float | None, source_style: str | None, seed: int,
                variations: int, size: str | None, batch_size: int, out_dir: Path,
                save_style: str | None, device: str, runtime: str, upscale: str | None,
                upscaler: str | None, as_json: bool) -> None:
    """Restyle INPUT images (files, or folders of pictures) with a translation MODEL.

    All inputs run as one job on one loaded model, in batches of pictures of the same
    size. Each output is named INPUTSTEM-restyle-STYLE-seedN.png. A picture that cannot
    be read is reported and skipped; the others are still written (exit status 2 when
    any input failed). Each PNG carries a recipe in its metadata that regenerates it.
    """
    from ..pipelines.restyle_batch import check_batch_size
    from ..pipelines.style import (
        require_translation,
        restyle_each,
        save_image,
        save_style_images,
    )

    check_batch_size(batch_size)
    paths_in = _expand_inputs(inputs)
    one_file = out_dir.suffix.lower() == ".png"
    if one_file and len(paths_in) * variations != 1:
        raise PolychromeError(f"-o {out_dir} names one PNG file but "
                              f"{len(paths_in) * variations} images will be made: give a "
                              "directory", code="bad_request")
    r = _restyler(model, device, size, runtime)
    require_translation(r.model, "restyle")
    if not paths_in:
        raise PolychromeError(f"restyle needs at least one INPUT image for {r.model.name}",
                              code="missing_input")
    _check_save_name(r, save_style)
    sr = load_upscaler(upscale, upscaler, device, r.model.style_names)
    t0 = time.perf_counter()
    with _bar(len(paths_in) * max(variations, 1), "restyling", as_json) as bar:
        results = restyle_each(r.model, paths_in, style=style, reference=reference,
                               strength=strength, seed=seed, variations=variations,
                               pixel_blend=pixel_blend, source_style=source_style,
                               device=device, restyler=r, batch_size=batch_size,
                               progress=lambda done, total: bar.update(done - bar.n))
    failed = [(p, res) for p, res in zip(paths_in, results, strict=True)
              if isinstance(res, PolychromeError)]
    if len(failed) == len(paths_in):
        raise failed[0][1]  # nothing made: the one-line error of the first input
    done = [(p, apply_upscale(res, sr, upscale, device)) for p, res in zip(paths_in, results,
                                                                        strict=True)
            if not isinstance(res, PolychromeError)]
    images = [im for _, ims in done for im in ims]
    seconds = time.perf_counter() - t0
    if one_file:
        paths = [save_image(images[0], out_dir)]
    else:
        stems = [Path(p).stem for p, ims in done for _ in ims]
        paths = save_style_images(images, out_dir, stems)
    saved = _save_from(r, save_style, images[0].metadata)
    meta = images[0].metadata
    written = iter(paths)  # in input order, like `results`
    entries = [{"input": p, "error": str(res), "code": res.code}
               if isinstance(res, PolychromeError)
               else {"input": p, "images": [str(next(written)) for _ in res]}
               for p, res in zip(paths_in, results, strict=True)]
    if as_json:
        emit_json({"images": [str(p) for p in paths], "model": meta["model"],
                   "version": meta["version"], "style": meta["style"], "seed": seed,
                   "variations": variations, "strength": strength, "pixel_blend": pixel_blend,
                   "inputs": paths_in, "saved_style": saved,
                   "results": entries, "failed": len(failed),
                   "batch_size": batch_size,
                   "images_per_s": round(len(images) / max(seconds, 1e-9), 3),
                   **_size_facts(images, seconds)})
    else:
        w, h = images[0].array.shape[1], images[0].array.shape[0]
        echo(f"wrote {len(paths)} image(s) of {w}x{h} from {_model_label(meta)} "
             f"({meta['style']}) to {out_dir} in {seconds:.1f} s")
        if saved:
            echo(f"saved style {saved['name']!r}")
    for p, err in failed:
        click.echo(f"error: {err}" if Path(p).name in str(err) else f"error: {p}: {err}",
                   err=True)
    if failed:
        raise PolychromeError(f"{len(failed)} of {len(paths_in)} input(s) could not be "
                              f"restyled (above); the other {len(paths)} image(s) are "
                              "written", code="some_inputs_failed")


def _weighted(items: tuple[str, ...], picture: bool, r: Any) -> list[tuple[Any, float]]:
    from ..pipelines.style import load_picture, parse_weighted

    out = []
    for text in items:
        spec, w = parse_weighted(text)
        out.append((load_picture(r.model, spec, reference=True) if picture else spec, w))
    return out


@app.command("mix")
@click.argument("model")
@click.argument("input_image", required=False, metavar="[INPUT]")
@click.option("--style", "styles", multiple=True,
              help=f"STYLE=W (repeatable; W defaults to 1). STYLE: {STYLE_HELP}.")
@click.option("--reference", "references", multiple=True,
              help="IMG=W: a reference picture and its weight (repeatable; stargan).")
@click.option("--seed", type=int, default=0, show_default=True, help="Latent seed.")
@click.option("--crossover", type=int, default=None,
              help="stylegan per-layer mix: layers < K from the first --style, the rest from "
                   "the second.")
@click.option("--strength", type=float, default=1.0, show_default=True,
              help="Translation models: 0 = the input's own style, 1 = the blend.")
@click.option("--pixel-blend", type=float, default=None, help="Also fade pixels (see restyle).")
@click.option("--source-style", default=None, help="Style of INPUT, for --strength < 1.")
@click.option("--size", default=None, help=SIZE_HELP)
@click.option("-o", "--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="Output PNG file.")
@click.option("--save-style", default=None, help="Save the blended code in the style bank.")
@click.option("--device", default="cpu", show_default=True)
@json_option
def mix_cmd(model: str, input_image: str | None, styles: tuple[str, ...],
            references: tuple[str, ...], seed: int, crossover: int | None, strength: float,
            pixel_blend: float | None, source_style: str | None, size: str | None,
            out_path: Path, save_style: str | None, device: str, as_json: bool) -> None:
    """Blend styles (weights are normalised to sum 1) with MODEL.

    A translation model restyles INPUT with the blended style code; a noise → image model
    (INPUT omitted) generates from a blend of its learned styles (stylegan: in w space,
    or per layer with --crossover; other conditional models: their label embeddings).
    """
    from ..pipelines.style import mix, save_image

    if out_path.suffix.lower() != ".png":
        raise PolychromeError(f"-o must name a .png file, got {out_path}", code="bad_request")
    r = _restyler(model, device, size)
    pairs = _weighted(styles, False, r) + _weighted(references, True, r)
    if not pairs:
        raise PolychromeError("give at least one --style STYLE=W or --reference IMG=W",
                              code="bad_request")
    _check_save_name(r, save_style)
    t0 = time.perf_counter()
    image = mix(r.model, pairs, source=input_image, seed=seed, crossover=crossover,
                strength=strength, pixel_blend=pixel_blend, source_style=source_style,
                device=device, restyler=r)
    save_image(image, out_path)
    saved = _save_from(r, save_style, image.metadata)
    meta = image.metadata
    if as_json:
        import json

        recipe = json.loads(meta["recipe"])
        emit_json({"image": str(out_path), "model": meta["model"], "version": meta["version"],
                   "style": meta["style"], "weights": recipe["weights"],
                   "components": recipe["components"], "seed": seed, "crossover": crossover,
                   "saved_style": saved, **_size_facts([image], time.perf_counter() - t0)})
        return
    echo(f"wrote {out_path} ({meta['style']}) from {_model_label(meta)}")


@app.command("interpolate")
@click.argument("model")
@click.argument("input_image", required=False, metavar="[INPUT]")
@click.option("--from", "start", required=True, help=f"Start: {STYLE_HELP}.")
@click.option("--to", "end", required=True, help="End (same forms as --from).")
@click.option("--frames", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Latent seed of learned-style endpoints.")
@click.option("--style", default=None, help="Style of seed:N / reference endpoints.")
@click.option("--pingpong", is_flag=True, help="Run back to the start (loops smoothly).")
@click.option("--fps", type=float, default=12.0, show_default=True)
@click.option("--scale", type=int, default=1, show_default=True,
              help="Enlarge frames by this integer factor (nearest neighbour).")
@click.option("--frames-dir", type=click.Path(path_type=Path), default=None,
              help="Also write every frame as a PNG (with its regenerating metadata).")
@click.option("--size", default=None, help=SIZE_HELP)
@click.option("-o", "--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="OUT.gif, or OUT.mp4 when imageio-ffmpeg is installed.")
@click.option("--device", default="cpu", show_default=True)
@json_option
def interpolate_cmd(model: str, input_image: str | None, start: str, end: str, frames: int,
                    seed: int, style: str | None, pingpong: bool, fps: float, scale: int,
                    frames_dir: Path | None, size: str | None, out_path: Path, device: str,
                    as_json: bool) -> None:
    """An animation from one style (or seed, or reference) to another."""
    from ..pipelines.animate import FORMATS, interpolate, mp4_available, write_animation
    from ..pipelines.style import save_style_images

    ext = out_path.suffix.lower()
    if ext not in FORMATS or (ext == ".mp4" and not mp4_available()):
        extra = "" if mp4_available() else " (MP4 needs imageio-ffmpeg, not installed)"
        raise PolychromeError(f"-o must end in .gif{' or .mp4' if mp4_available() else ''}, "
                              f"got {out_path}{extra}", code="bad_request")
    r = _restyler(model, device, size)
    t0 = time.perf_counter()
    with _bar(frames, "interpolating", as_json) as bar:
        images = interpolate(r.model, start, end, source=input_image, frames=frames, seed=seed,
                             style=style, pingpong=pingpong, device=device, restyler=r,
                             progress=lambda done, total: bar.update(1))
    info = write_animation(images, out_path, fps=fps, scale=scale)
    frame_paths = None
    if frames_dir is not None:
        frame_paths = [str(p) for p in save_style_images(images[:frames], frames_dir)]
    if as_json:
        meta = images[0].metadata
        emit_json({**info, "model": meta["model"], "version": meta["version"],
                   "frames": len(images), "requested_frames": frames, "pingpong": pingpong,
                   "from": start, "to": end, "frame_images": frame_paths,
                   **_size_facts(images, time.perf_counter() - t0)})
        return
    echo(f"wrote {info['path']} ({len(images)} frames, {info['format']})")


@app.group("styles")
def styles_group() -> None:
    """A model's learned styles and its style bank (saved style codes)."""


@styles_group.command("list")
@click.argument("model")
@json_option
def styles_list(model: str, as_json: bool) -> None:
    """List MODEL's learned styles and saved (bank) styles."""
    from ..persistence.models import load_model
    from ..pipelines import stylebank
    from ..sampling import model_identity

    m = load_model(model)
    bank = stylebank.list_bank(m) if stylebank.code_kind(m) else []
    name, version = model_identity(m)
    if as_json:
        emit_json({"model": name, "version": version, "arch": m.name, "family": m.family,
                   "learned": m.style_names, "bank": bank,
                   "bank_dir": str(stylebank.bank_dir(m))})
        return
    echo(f"{name}{':' + version if version else ''} ({m.name}, {m.family})")
    echo("learned styles: " + ", ".join(m.style_names))
    if not bank:
        echo("saved styles:   (none)")
    for e in bank:
        src = e.get("source", {})
        kinds = "+".join(c.get("kind", "?") for c in src.get("components", [])) or "?"
        echo(f"  bank:{e['name']}  ({e['kind']}, from {kinds}, {e.get('created', '')})")


@styles_group.command("remove")
@click.argument("model")
@click.argument("name")
@json_option
def styles_remove(model: str, name: str, as_json: bool) -> None:
    """Remove saved style NAME from MODEL's style bank."""
    from ..persistence.models import load_model
    from ..pipelines import stylebank

    m = load_model(model)
    stylebank.remove_style(m, name[len(stylebank.BANK_PREFIX):]
                           if name.startswith(stylebank.BANK_PREFIX) else name)
    if as_json:
        emit_json({"removed": name, "model": stylebank.bank_key(m)})
    else:
        echo(f"removed {name}")
