"""Restoration at the picture's own size: super-resolution, inpainting, colorization.

One pipeline for every surface (CLI `polychrome restore`, `POST /api/restore`, the
Restore page, and the cascade that hands a generated or restyled picture to an sr model):

    restore(model, image, task=..., scale=..., mask=...) -> GeneratedImage

The picture is decoded by the one safe decoder, turned into the model's input
(`Pix2Pix.prepare`: the small picture, the pyramid-filled picture and its mask, or the
luma) and run through the tiling engine (pipelines/tiling.py), so any size works with
bounded memory. Inpainting copies every pixel outside the mask from the input, byte for
byte; colorization keeps the input's luma (to within 8-bit rounding).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..colour import luma
from ..errors import ImageRejected, ModelError, PolychromeError
from ..imageio import decode_image, from_tensor, to_tensor
from ..models.base import GANModel
from ..sampling import GeneratedImage, load_model_on, model_identity
from ..settings import get_settings
from .tiling import configured_tiles, run_image_model

TASKS = ("sr", "inpaint", "colorize")
TASK_LABELS = {"sr": "super-resolution", "inpaint": "inpainting", "colorize": "colorization"}


def require_restoration(model: GANModel, task: str | None = None) -> str:
    """The model's task; a clear error when it is not a restoration model or not `task`'s."""
    if model.family != "restoration":
        raise ModelError(f"{model_identity(model)[0]} is a {model.family} model; restore needs "
                         "a restoration model (pix2pix)", code="wrong_family")
    own = str(model.config.task)
    if task is not None and task not in TASKS:
        raise PolychromeError(f"task must be one of {', '.join(TASKS)}, got {task!r}",
                              code="bad_request")
    if task is not None and task != own:
        raise PolychromeError(f"{model_identity(model)[0]} is a {TASK_LABELS[own]} model "
                              f"(task {own}), not {TASK_LABELS[task]}: pick a model trained with --task {task}",
                              code="wrong_task")
    return own


def model_scales(model: GANModel) -> list[int]:
    return [int(s) for s in model.config.task_scales()]


def check_scale(model: GANModel, scale: Any) -> int:
    """The sr factor to use: `scale` if the model was trained for it (default: its largest)."""
    scales = model_scales(model)
    if model.config.task != "sr":
        if scale not in (None, 1, "1"):
            raise PolychromeError(f"scale applies to super-resolution; "
                                  f"{model_identity(model)[0]} keeps the picture's size",
                                  code="bad_scale")
        return 1
    if scale is None or scale == "":
        return max(scales)
    try:
        s = int(scale)
    except (TypeError, ValueError):
        raise PolychromeError(f"scale must be an integer, got {scale!r}",
                              code="bad_scale") from None
    if s not in scales:
        trained = ", ".join(f"x{v}" for v in scales)
        raise PolychromeError(f"{model_identity(model)[0]} is trained for {trained}, not x{s}",
                              code="bad_scale")
    return s


def _decode(image: Any, what: str, *, code: str = "bad_image",
            background: tuple[int, int, int] = (255, 255, 255)) -> tuple[np.ndarray, str]:
    """A path, encoded bytes or an (H, W, 3) uint8 array -> (array, label).

    Files go through the one safe decoder (alpha composited on `background`: a mask's
    transparent pixels are black, keep); errors name the file, and a wrong kind of input
    is a `code` error.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise PolychromeError(f"expected an (H, W, 3) uint8 {what}, got {image.dtype} "
                                  f"{image.shape}", code=code)
        return image, what
    if isinstance(image, str | os.PathLike):
        if Path(image).is_dir():
            kind = "an image" if what == "picture" else f"a {what} image"
            raise PolychromeError(f"{image} is a directory, not {kind}", code=code)
        label = Path(image).name
    elif isinstance(image, bytes | bytearray | memoryview):
        image, label = bytes(image), what
    else:
        raise PolychromeError(f"cannot read a {what} from a {type(image).__name__}", code=code)
    try:
        return decode_image(image, background=background), label
    except ImageRejected as e:  # "photo.jpg: ..." / "mask m.png: ..."
        named = label if what == "picture" else f"{what} {label}"
        raise ImageRejected(f"{named}: {e}", code=e.code) from None


def decode_mask(mask: Any, height: int, width: int) -> np.ndarray:
    """A mask picture -> (H, W) bool, True = fill. White (light) pixels are holes.

    Transparent pixels count as black (keep), so both white-on-black masks and strokes
    painted on a transparent layer work. The mask must have the picture's size and mark
    some but not all of it.
    """
    if isinstance(mask, np.ndarray) and mask.ndim == 2:
        arr = mask.astype(np.float32)
        holes = arr > (127 if mask.dtype == np.uint8 else 0.5)
    else:
        rgb, _ = _decode(mask, "mask", code="bad_mask", background=(0, 0, 0))
        holes = _luma_u8(rgb) > 127
    if holes.shape != (height, width):
        raise PolychromeError(f"the mask is {holes.shape[1]}x{holes.shape[0]} but the picture "
                              f"is {width}x{height}: they must be the same size",
                              code="bad_mask")
    n = int(holes.sum())
    if n == 0:
        raise PolychromeError("the mask is empty: paint (white) the parts to fill in",
                              code="bad_mask")
    if n == holes.size:
        raise PolychromeError("the mask covers the whole picture: nothing is left to fill "
                              "in from", code="bad_mask")
    return holes


def _luma_u8(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


def output_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """(H, W) of the result; refused beyond the installation's native_max_side."""
    cap = get_settings().native_max_side
    oh, ow = height * scale, width * scale
    if max(oh, ow) > cap:
        raise PolychromeError(f"the result would be {ow}x{oh}, over the {cap} px limit on a "
                              f"side (POLYCHROME_NATIVE_MAX_SIDE); use a smaller picture"
                              + (" or scale" if scale > 1 else ""), code="too_large")
    return oh, ow


def restore_array(model: GANModel, arr: np.ndarray, *, scale: int = 1,
                  holes: np.ndarray | None = None, device: str | torch.device = "cpu"
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """(H, W, 3) uint8 -> (H*s, W*s, 3) uint8 and tiling facts. No checks beyond shapes."""
    task = model.config.task
    x = to_tensor(arr).unsqueeze(0).to(device)  # (1, 3, H, W) in [-1, 1]
    with torch.inference_mode():
        if task == "inpaint":
            m = torch.from_numpy(holes.astype(np.float32))[None, None].to(device)
            x_in = model.prepare(x, m)
        else:
            x_in = model.prepare(x)
        del x
        y, info = run_image_model(lambda t: model.generator(t, scale), x_in,
                                  multiple=model.multiple, scale=scale,
                                  settings=configured_tiles())
        del x_in
        out = from_tensor(y[0].clamp(-1, 1))  # (H*s, W*s, 3) uint8
    if task == "inpaint":  # outside the holes: the input's own bytes
        out = np.where(holes[..., None], out, arr)
    return np.ascontiguousarray(out), info


def restore(model: GANModel | str, image: Any, *, task: str | None = None, scale: Any = None,
            mask: Any = None, device: str | torch.device = "cpu") -> GeneratedImage:
    """Restore one picture with a restoration model; the result at (H*s) x (W*s).

    image: a path, encoded bytes or an (H, W, 3) uint8 array. mask (inpaint): the same,
    or an (H, W) array; white = fill. Metadata records the model, task, scale and the
    input's (and mask's) sha256, so the result can be traced and remade.
    """
    model = load_model_on(model, device)
    own = require_restoration(model, task)
    s = check_scale(model, scale)
    if own != "inpaint" and mask is not None:
        raise PolychromeError(f"a mask is for inpainting; {model_identity(model)[0]} does "
                              f"{TASK_LABELS[own]}", code="bad_mask")
    if own == "inpaint" and mask is None:
        raise PolychromeError("inpainting needs a mask (white = the parts to fill in)",
                              code="missing_mask")
    arr, label = _decode(image, "picture")
    h, w = arr.shape[:2]
    oh, ow = output_size(h, w, s)
    holes = decode_mask(mask, h, w) if own == "inpaint" else None
    if own == "colorize":  # a colour picture is made grey first: only its luma is used
        arr = grey_u8(arr)
    t0 = time.perf_counter()
    out, info = restore_array(model, arr, scale=s, holes=holes, device=device)
    seconds = time.perf_counter() - t0
    name, version = model_identity(model)
    meta = {
        "model": name, "version": version, "arch": model.name, "style": "", "seed": "",
        "truncation": "", "index": "0", "polychrome_version": __version__,
        "task": own, "scale": str(s), "input": label,
        "input_sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(),
        "width": str(ow), "height": str(oh), "tiles": str(info["tiles"]),
        "seconds": f"{seconds:.3f}",
    }
    if holes is not None:
        meta["mask_sha256"] = hashlib.sha256(np.packbits(holes).tobytes()).hexdigest()
        meta["mask_fraction"] = f"{float(holes.mean()):.4f}"
    return GeneratedImage(array=out, metadata=meta)


def grey_u8(arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the same picture in grey (BT.601 luma in all three channels)."""
    y = luma(torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None].float())[0, 0]
    g = y.round().clamp(0, 255).to(torch.uint8).numpy()
    return np.repeat(g[..., None], 3, axis=2)


def check_upscaler(model: GANModel, scale: Any) -> int:
    """The factor an upscaler will use; refused when it is not a super-resolution model or
    was not trained for `scale` (checked before the first picture is made)."""
    if require_restoration(model) != "sr":
        raise PolychromeError(f"{model_identity(model)[0]} is not a super-resolution model: "
                              "the upscaler must be one (task sr)", code="wrong_task")
    return check_scale(model, scale)


def upscale(model: GANModel | str, image: GeneratedImage, scale: Any,
            device: str | torch.device = "cpu") -> GeneratedImage:
    """The cascade: hand a generated / restyled picture to an sr model in the same call.

    The result keeps the original's metadata (so its recipe still names what made it) and
    adds `upscaled_by`, `upscale` and the new size.
    """
    sr = load_model_on(model, device)
    s = check_upscaler(sr, scale)
    h, w = image.array.shape[:2]
    output_size(h, w, s)
    out, info = restore_array(sr, image.array, scale=s, device=device)
    name, version = model_identity(sr)
    meta = dict(image.metadata)
    meta.update({"upscaled_by": name + (f":{version}" if version else ""),
                 "upscale": str(s), "width": str(out.shape[1]), "height": str(out.shape[0])})
    return GeneratedImage(array=out, metadata=meta)


def default_upscaler(scale: Any, styles: list[str] | None = None) -> str:
    """The sr model the cascade uses when none is named (as name:version).

    Among the super-resolution models trained for `scale`: the one trained on the most of
    `styles` (the style names of the model whose picture it enlarges: an emoji generator
    gets the sr model trained on emoji, a photo restyler the one trained on photos), then
    the first registered.
    """
    try:
        s = int(scale)
    except (TypeError, ValueError):
        raise PolychromeError(f"upscale must be an integer factor, got {scale!r}",
                              code="bad_scale") from None
    from ..persistence.models import restoration_models

    fits = [m for m in restoration_models() if m["task"] == "sr" and s in m["scales"]]
    if fits:
        wanted = set(styles or [])
        best = max(fits, key=lambda m: len(wanted & set(m["styles"])))  # first of the ties
        return f"{best['name']}:{best['version']}"
    raise PolychromeError(f"no super-resolution model trained for x{s} is registered: train "
                          f"one (polychrome train pix2pix --task sr --scale {s}) or name one "
                          "as the upscaler", code="no_upscaler")
