"""Interpolation animations between seeds, styles, saved styles or reference pictures.

Frame i of N has t = i / (N - 1). Between two latent-guided endpoints of the same style
(e.g. `seed:1` -> `seed:2`) z follows a great circle (slerp: every frame stays a typical
Gaussian sample) and is mapped per frame; between anything else the codes are lerped:
s / w = (1 - t) a + t b (for label-conditioned noise models, the label embeddings; z is
slerped too when the seeds differ). Each frame is an ordinary style image whose recipe
(weights [1 - t, t]) regenerates it alone.

Output: GIF through Pillow, always; MP4 when an encoder is installed (the optional
`imageio-ffmpeg` package, which ships an ffmpeg binary). Pillow merges consecutive
identical frames of a GIF into one longer frame, so `frames_written` may be smaller
than requested when the endpoints coincide.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import PolychromeError
from ..models.base import GANModel
from ..sampling import GeneratedImage, style_index
from ..utils.atomic import atomic_path, atomic_write_bytes
from . import stylebank
from .recipe import Recipe, check_seed
from .restyler import Restyler
from .style_codes import StyleSource, parse_source

log = logging.getLogger(__name__)

MAX_FRAMES = 1000
FORMATS = (".gif", ".mp4")


def mp4_available() -> bool:
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def _endpoint_components(r: Restyler, a: StyleSource, b: StyleSource, seed: int,
                         style: int | None) -> list[dict[str, Any]]:
    # A seed endpoint on a translation model takes the other endpoint's style unless
    # --style says otherwise (a style code only exists for a given style).
    if style is None and r.family == "code" and (a.kind == "seed") != (b.kind == "seed"):
        other = r.component(b if a.kind == "seed" else a, seed)
        name = other.get("style")
        if other["kind"] == "bank":  # the style the saved code was made in, if one
            name = stylebank.entry_style(stylebank.load_style(r.model, other["name"])[1])
        dom = style_index(r.model, name) if name is not None else None
        first = r.component(a, seed, dom) if a.kind == "seed" else other
        second = r.component(b, seed, dom) if b.kind == "seed" else other
        return [first, second]
    return [r.component(a, seed, style), r.component(b, seed, style)]


def interpolate(model: GANModel | str, a: Any, b: Any, *, source: Any | None = None,
                frames: int = 16, seed: int = 0, style: str | int | None = None,
                pingpong: bool = False, device: str | torch.device = "cpu",
                restyler: Restyler | None = None,
                progress: Callable[[int, int], None] | None = None,
                size: int | str | None = None) -> list[GeneratedImage]:
    """Frames from endpoint `a` to `b` (style names, `bank:NAME`, `seed:N`, picture paths).

    `style` pins the style of `seed:N` and reference endpoints. A translation model
    restyles `source` along the path; a noise model generates. With `pingpong` the
    frames run back (the endpoints are not repeated): 2N - 2 frames.
    """
    r = restyler or Restyler(model, device=device, size=size)
    if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= MAX_FRAMES:
        raise PolychromeError(f"frames must be an integer in 2..{MAX_FRAMES}, got {frames!r}",
                              code="bad_request")
    check_seed(seed)
    r.take_source(source, "interpolate")
    if r.family == "fixed":
        raise PolychromeError(f"{r.model.name} has no style codes to interpolate (it translates "
                              "into one style at a time); use a stargan", code="unsupported")
    dom = style_index(r.model, style) if style is not None else None
    fam_code = r.family == "code"
    srcs = [parse_source(r.model, e, domain=dom, allow_reference=fam_code) for e in (a, b)]
    comps = _endpoint_components(r, srcs[0], srcs[1], seed, dom)
    r._check_blend(comps)
    ca, cb = comps
    slerp_z = (ca["kind"] == cb["kind"] == "latent" and ca["style"] == cb["style"]
               and ca["seed"] != cb["seed"])
    images: list[GeneratedImage] = []
    for i in range(frames):
        t = i / (frames - 1)
        recipe = Recipe(op="interpolate", components=[ca, cb], weights=[1.0 - t, t],
                        interp="slerp" if slerp_z else "lerp", seed=seed,
                        extra={"frame": i, "frames": frames, "t": repr(t)})
        images.append(r.run(recipe, index=i))
        if progress is not None:
            progress(i + 1, frames)
    if pingpong:
        images = images + images[-2:0:-1]
    return images


def _scaled(arr: np.ndarray, scale: int) -> np.ndarray:
    return arr if scale == 1 else arr.repeat(scale, axis=0).repeat(scale, axis=1)


def animation_metadata(images: list[GeneratedImage]) -> dict[str, Any]:
    """What the animation is (the endpoints' recipe), stored in the file's comment."""
    first = images[0].metadata
    recipe = json.loads(first["recipe"])
    return {"model": first["model"], "version": first["version"], "arch": first["arch"],
            "op": "interpolate", "from": recipe["components"][0], "to": recipe["components"][1],
            "interp": recipe["interp"], "seed": recipe["seed"],
            "frames": int(first.get("frames", len(images))),
            "source_sha256": first.get("source_sha256", ""),
            "polychrome_version": first["polychrome_version"]}


def write_animation(images: list[GeneratedImage], path: str | Path, *, fps: float = 12.0,
                    scale: int = 1) -> dict[str, Any]:
    """Write a GIF (Pillow) or an MP4 (needs imageio-ffmpeg), atomically.

    Returns {"path", "format", "frames_written", "fps", "size"}. `scale` repeats pixels
    (nearest neighbour) so tiny images are visible in players.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise PolychromeError(f"unsupported animation format {ext or '(none)'!r}: write a .gif"
                              f"{' or .mp4' if mp4_available() else ''}", code="bad_request")
    if not images:
        raise PolychromeError("no frames to write", code="bad_request")
    if not 0 < fps <= 100 or not isinstance(scale, int) or not 1 <= scale <= 64:
        raise PolychromeError("fps must be in (0, 100] and scale an integer in 1..64",
                              code="bad_request")
    frames = [_scaled(im.array, scale) for im in images]
    comment = json.dumps(animation_metadata(images), sort_keys=True, separators=(",", ":"))
    if ext == ".gif":
        pics = [Image.fromarray(f) for f in frames]
        buf = io.BytesIO()
        pics[0].save(buf, "GIF", save_all=True, append_images=pics[1:], loop=0,
                     duration=max(20, round(1000 / fps)), comment=comment.encode())
        atomic_write_bytes(path, buf.getvalue())
        with Image.open(path) as check:
            written = int(getattr(check, "n_frames", 1))
    else:
        _write_mp4(frames, path, fps, comment)
        written = len(frames)
    log.info("wrote %d-frame %s to %s", written, ext[1:], path)
    return {"path": str(path), "format": ext[1:], "frames_written": written, "fps": fps,
            "size": list(frames[0].shape[1::-1])}


def _write_mp4(frames: list[np.ndarray], path: Path, fps: float, comment: str) -> None:
    if not mp4_available():
        raise PolychromeError("no MP4 encoder is installed (pip install imageio-ffmpeg); "
                              "write a .gif instead", code="unsupported")
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:  # yuv420p needs even sides
        frames = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") for f in frames]
        h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
            macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-f", "mp4", "-metadata", f"comment={comment}"])
        writer.send(None)  # start ffmpeg
        try:
            for f in frames:
                writer.send(np.ascontiguousarray(f).tobytes())
        finally:
            writer.close()
