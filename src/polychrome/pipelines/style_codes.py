"""Style sources -> style codes: the parsing and resolution half of the style pipeline.

Vocabulary (see style.py for the operations built on it):
  picture     an input or reference image as the model sees it: decoded by the safe
              decoder, squared and resized like the training cache (`square_resize`),
              identified by the sha256 of those R x R x 3 uint8 pixels.
  source      what the user typed for a style: a learned style (name or index), a
              style-bank entry (`bank:NAME`, or `NAME` when no learned style has that
              name), `seed:N`, or a reference picture (a path, or pixels from the API).
  component   a source resolved against a model, as recorded in PNG metadata:
              {"kind": "latent", "style", "seed"}   s = F(z_seed, y) / w = mapping(z_seed, y)
              {"kind": "reference", "style", "sha256", "domain_by"}   s = E(ref, y)
              {"kind": "bank", "name", "code_sha256"}   a saved code
              {"kind": "target", "style"}   cyclegan: the direction only

Model families, by what their style is (`style_family`):
  "code"   StarGAN-like translator: style code s (mapping F, encoder E, G.encode/decode).
  "fixed"  CycleGAN-like translator: a direction, no code (no blend, no strength).
  "w"      style-based noise model: w latents, blended in w space, mixed per layer.
  "label"  other conditional noise models: a blend is the generator run on the soft
           label sum_i w_i onehot(y_i), a (1, num_domains) float weight vector that every
           zoo generator accepts as y (models.layers.embed_labels); nothing shared changes.
  "plain"  unconditional noise models: seeds only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.cache import FITS, square_resize
from ..errors import ImageRejected, ModelError, PolychromeError
from ..imageio import decode_image, to_tensor
from ..models.base import GANModel
from ..sampling import model_identity, style_index
from ..settings import get_settings
from . import stylebank

log = logging.getLogger(__name__)

TRANSLATION_ARCHS = "stargan, cyclegan"


# -- families ---------------------------------------------------------------------------------
def style_family(model: GANModel) -> str:
    if model.family == "translation":
        gen = getattr(model, "generator", None)
        if hasattr(model, "style_from_latent") and hasattr(gen, "encode"):
            return "code"
        return "fixed"
    if model.family == "noise":
        if stylebank.code_kind(model) == "w":
            return "w"
        if model.config.num_domains > 1:  # every conditional zoo generator takes soft labels
            return "label"
        return "plain"
    return "other"


def describe_family(model: GANModel) -> str:
    if model.family == "translation":
        return "an image → image (translation) model"
    if model.family == "noise":
        return "a noise → image model"
    return f"a {model.family} model"


def require_translation(model: GANModel, op: str) -> None:
    if model.family != "translation":
        alt = "use generate/mix" if model.family == "noise" else "it has its own pipeline"
        raise ModelError(f"{op} needs a translation model ({TRANSLATION_ARCHS}); "
                         f"{model.name} is {describe_family(model)} — {alt}",
                         code="wrong_family")


# -- pictures ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Picture:
    array: np.ndarray  # (H, W, 3) uint8: exactly what the model sees (R x R for whole models)
    sha256: str  # of array.tobytes() (regeneration checks this, not the file's bytes)
    label: str  # file name, or "image" for pixels handed over by the API
    file_sha256: str | None = None  # sha256 of the file's bytes, when it came from one
    aspect: tuple[int, int] = (0, 0)  # (H, W) of the decoded picture: whole models give
    # their R x R drawing back at this aspect

    def tensor(self, device: str | torch.device) -> torch.Tensor:
        return to_tensor(self.array).unsqueeze(0).to(device)  # (1, 3, H, W) in [-1, 1]


def pixels_sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def is_native(model: GANModel) -> bool:
    """True for image -> image models trained on crops: they run at the picture's size."""
    return model.family == "translation" and model.meta.get("fit") == "crops"


def size_multiple(model: GANModel) -> int:
    """The generator's total stride: native-size inputs are padded to a multiple of it."""
    cfg = model.config
    n = getattr(cfg, "g_down", None)
    if n is None:
        n = getattr(cfg, "n_down", 0)
    return 2 ** int(n)


def parse_size(size: Any) -> int | None:
    """A `size` option ("native", None or a long side in pixels) -> None (native) or N."""
    if size is None or (isinstance(size, str) and size.strip().lower() in ("native", "")):
        return None
    try:
        n = int(str(size).strip()) if not isinstance(size, bool) else None
    except ValueError:
        n = None
    if n is None or n < 8:
        raise PolychromeError(f"size must be 'native' or a long side in pixels >= 8, got "
                              f"{size!r}", code="bad_size")
    cap = get_settings().native_max_side
    if n > cap:
        raise PolychromeError(f"size {n} is above the cap of {cap} px (setting "
                              "POLYCHROME_NATIVE_MAX_SIDE)", code="too_large")
    return n


def resize_long_side(arr: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> the same picture with its longer side = long_side (LANCZOS)."""
    h, w = arr.shape[:2]
    if max(h, w) == long_side:
        return arr
    f = long_side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.array(Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
                    .resize(size, Image.Resampling.LANCZOS))


def working_array(model: GANModel, arr: np.ndarray, size: int | None) -> np.ndarray:
    """What the model sees of a decoded (H, W, 3) picture.

    Native models: the picture itself (longer side = `size`, or its own capped by the
    setting `native_max_side`). Whole-picture models: squared like the training cache
    ("pad" models pad, others stretch to R x R so nothing is cut off; the pipeline gives
    the drawing back at the picture's aspect).
    """
    if is_native(model):
        cap = get_settings().native_max_side
        target = size if size is not None else min(max(arr.shape[:2]), cap)
        return resize_long_side(arr, target)
    res = int(model.config.resolution)
    fit = str(model.meta.get("fit") or "crop")
    if fit == "pad":
        return square_resize(arr, res, "pad")
    if arr.shape[0] == arr.shape[1] or fit not in FITS:
        return square_resize(arr, res, "crop")
    return np.array(Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
                    .resize((res, res), Image.Resampling.LANCZOS))


def load_picture(model: GANModel, image: Any, *, label: str | None = None,
                 size: int | None = None, reference: bool = False) -> Picture:
    """A path, encoded bytes or an (H, W, 3) uint8 array -> the model's Picture.

    Decoded by the safe decoder (any picture, the model need not have seen it), then
    `working_array`. `reference`: a style reference for a native model, kept at a
    bounded size (only its style is read, from crops: `style_view`).
    """
    if isinstance(image, Picture):
        return image
    file_sha = None
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
            raise PolychromeError(f"expected an (H, W, 3) uint8 image, got {arr.dtype} "
                                  f"{arr.shape}", code="bad_image")
        name = label or "image"
    else:
        if isinstance(image, str | os.PathLike):
            name = label or Path(image).name
            if Path(image).is_dir():
                raise PolychromeError(f"{image} is a directory, not an image", code="bad_image")
        elif isinstance(image, bytes | bytearray | memoryview):
            name = label or "image"
            file_sha = hashlib.sha256(bytes(image)).hexdigest()
        else:
            raise PolychromeError(f"cannot read an image from a {type(image).__name__}",
                                  code="bad_image")
        try:
            if file_sha is None:
                raw = Path(image).read_bytes() if Path(image).is_file() else None
                file_sha = hashlib.sha256(raw).hexdigest() if raw is not None else None
            arr = decode_image(image)  # (H, W, 3) uint8; alpha composited on white
        except ImageRejected as e:
            raise ImageRejected(f"{name}: {e}", code=e.code) from None
    aspect = (int(arr.shape[0]), int(arr.shape[1]))
    if reference and is_native(model):
        arr = working_array(model, arr, min(max(aspect), REFERENCE_LONG_SIDE))
    elif reference:  # only its style counts: squared like the training data, not stretched
        arr = square_resize(arr, int(model.config.resolution),
                            str(model.meta.get("fit") or "crop"))
    else:
        arr = working_array(model, arr, size)
    return Picture(array=arr, sha256=pixels_sha256(arr), label=name, file_sha256=file_sha,
                   aspect=aspect)


REFERENCE_LONG_SIDE = 1024  # native models read a reference's style from crops of this


def style_view(model: GANModel, pic: Picture, device: str | torch.device) -> torch.Tensor:
    """What the style encoder (and domain guessing) sees of a picture: (K, 3, R, R).

    Whole models: the picture itself (K = 1). Native models were trained on R x R crops
    of pictures whose shorter side was in the scale range, so: the picture at the middle
    of that range, its centre crop and four more spread over it (K <= 5); the pipeline
    averages their codes, one global style for the whole picture.
    """
    x = pic.tensor(device)  # (1, 3, H, W) in [-1, 1]
    if not is_native(model):
        return x
    r = int(model.config.resolution)
    lo, hi = (model.meta.get("scale") or [2 * r, 6 * r])[:2]
    short = max(r, round(math.sqrt(float(lo) * float(hi))))
    h, w = x.shape[-2:]
    f = short / min(h, w)
    size = (max(r, round(h * f)), max(r, round(w * f)))
    x = F.interpolate(x, size=size, mode="bilinear", antialias=f < 1, align_corners=False)
    h, w = size
    spots = [(0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)]
    crops, seen = [], set()
    for fy, fx in spots:
        top = min(h - r, max(0, round(fy * h - r / 2)))
        left = min(w - r, max(0, round(fx * w - r / 2)))
        if (top, left) not in seen:
            seen.add((top, left))
            crops.append(x[:, :, top:top + r, left:left + r])
    return torch.cat(crops)  # (K, 3, R, R)


# -- sources ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StyleSource:
    kind: str  # "learned" | "seed" | "bank" | "reference"
    text: str  # as given (messages, file names)
    domain: int | None = None  # learned: its index; seed / reference: an explicit domain
    seed: int | None = None
    bank: str | None = None
    picture: Picture | None = None


def _valid_listing(model: GANModel) -> str:
    names = model.style_names
    saved = [e["name"] for e in stylebank.list_bank(model)] if stylebank.code_kind(model) else []
    text = f"valid styles: {', '.join(names)}"
    if saved:
        text += f"; saved styles: {', '.join('bank:' + n for n in saved)}"
    return text


def parse_source(model: GANModel, spec: Any, *, domain: int | None = None,
                 allow_reference: bool = True) -> StyleSource:
    """What a user typed (or an image handed over) -> a StyleSource.

    `domain` (an index) pins the style of a `seed:N` or reference source.
    Order for text: `bank:NAME`, `seed:N`, a learned style (name or index), a bank entry,
    an existing file (a reference picture).
    """
    if isinstance(spec, StyleSource):
        return spec
    if isinstance(spec, Picture | np.ndarray | bytes | bytearray):
        if not allow_reference:
            raise PolychromeError(f"{model.name} has no style encoder: reference pictures need "
                                  "a stargan model", code="unsupported")
        pic = load_picture(model, spec, reference=True)
        return StyleSource("reference", f"ref:{pic.sha256[:8]}", domain=domain, picture=pic)
    text = str(spec).strip()
    if text.startswith(stylebank.BANK_PREFIX):
        name = text[len(stylebank.BANK_PREFIX):]
        stylebank.load_style(model, name)  # fails early, listing the saved styles
        return StyleSource("bank", text, bank=name)
    if text.startswith("seed:"):
        n = text[len("seed:"):]
        if not (n.isascii() and n.isdigit()) or int(n) > 2**63 - 1:
            raise PolychromeError(f"bad seed in {text!r}: write seed:N with N an integer >= 0",
                                  code="bad_request")
        return StyleSource("seed", text, domain=domain, seed=int(n))
    try:
        return StyleSource("learned", text, domain=style_index(model, text))
    except PolychromeError:
        pass
    if stylebank.code_kind(model) and stylebank.has_style(model, text):
        return StyleSource("bank", text, bank=text)
    if text and Path(text).is_file():
        if not allow_reference:
            raise PolychromeError(f"{model.name} has no style encoder: reference pictures need "
                                  "a stargan model", code="unsupported")
        pic = load_picture(model, text, reference=True)
        return StyleSource("reference", text, domain=domain, picture=pic)
    hint = ", seed:N" + (" or an image path" if allow_reference else "")
    raise PolychromeError(f"unknown style {text!r}; {_valid_listing(model)} (or an index "
                          f"0..{model.config.num_domains - 1}{hint})", code="unknown_style")


# -- math -------------------------------------------------------------------------------------
def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of latents (1, D): keeps the norm a Gaussian sample expects."""
    if t == 0.0:
        return a
    if t == 1.0:
        return b
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    if float(so.abs().min()) < 1e-6:  # (anti)parallel: the great circle is undefined
        return (1.0 - t) * a + t * b
    return torch.sin((1.0 - t) * omega) / so * a + torch.sin(t * omega) / so * b


def weighted_sum(codes: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    out = codes[0] * weights[0]
    for c, w in zip(codes[1:], weights[1:], strict=True):
        out = out + c * w
    return out


def normalise_weights(weights: list[float]) -> list[float]:
    """Validate and scale to sum 1 (negative weights would extrapolate out of the style set)."""
    if not weights:
        raise PolychromeError("a blend needs at least one style", code="bad_request")
    for w in weights:
        if not math.isfinite(w):
            raise PolychromeError(f"style weights must be finite numbers, got {w}",
                                  code="bad_weight")
        if w < 0:
            raise PolychromeError(f"style weights must be >= 0, got {w} (negative weights "
                                  "would extrapolate beyond the styles)", code="bad_weight")
    top = max(weights)
    if top <= 0:
        raise PolychromeError("style weights sum to 0: give at least one a positive weight",
                              code="bad_weight")
    try:
        total = math.fsum(weights)
    except OverflowError:  # finite weights whose sum is not: only their ratios matter
        total = math.inf
    if not math.isfinite(total):
        weights = [w / top for w in weights]  # each in [0, 1]: the sum is at most len()
        total = math.fsum(weights)
    return [w / total for w in weights]


def parse_weighted(text: str) -> tuple[str, float]:
    """"STYLE=W" -> (STYLE, W); no "=W" (or an existing path containing "=") -> weight 1."""
    head, sep, tail = text.rpartition("=")
    if not sep:
        return text, 1.0
    try:
        w = float(tail)
    except ValueError:
        if Path(text).is_file():
            return text, 1.0
        raise PolychromeError(f"weight {tail!r} in {text!r} is not a number (write STYLE=W, "
                              "e.g. neon=0.7)", code="bad_weight") from None
    if not head:
        raise PolychromeError(f"{text!r} names no style (write STYLE=W)", code="bad_weight")
    return head, w


# -- reference domain --------------------------------------------------------------------------
_EVALUATORS: dict[tuple[str, int], Any] = {}


def _saved_evaluator(model: GANModel) -> Any | None:
    """The dataset's offline evaluator at the model's resolution, if it was already trained."""
    dataset = model.meta.get("dataset")
    if not dataset:
        return None
    from ..data.cache import resolve_dataset_dir
    from ..metrics.evaluator import OfflineEvaluator

    try:
        d = resolve_dataset_dir(str(dataset)) / "evaluator" / str(model.config.resolution)
    except PolychromeError:
        return None
    if not (d / "config.json").is_file():
        return None  # training one here would take minutes: not at request time
    key = (str(d), int((d / "config.json").stat().st_mtime_ns))
    if key not in _EVALUATORS:
        try:
            _EVALUATORS[key] = OfflineEvaluator.load(d)
        except PolychromeError:
            return None
    return _EVALUATORS[key]


@torch.inference_mode()
def guess_domain(model: GANModel, pic: Picture, content: Any,
                 device: str | torch.device) -> tuple[int, str]:
    """(style index, how) of a picture whose style the user did not give.

    1. "evaluator": the dataset's offline evaluator (if already trained) classifies it;
    2. "discriminator": argmax_y D(x, y), when the model's discriminator was loaded
       (exported models carry only the inference networks);
    3. "reconstruction": the style whose code E(x, y) best reconstructs the picture,
       argmin_y |G(x, E(x, y)) - x| (what the cycle loss trains) — always available.
    """
    names = model.style_names
    ev = _saved_evaluator(model)
    if ev is not None and set(names) & set(ev.styles):
        view = style_view(model, pic, "cpu")  # (K, 3, R, R) in [-1, 1]
        probs = ev.classify(((view + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)).mean(0)
        scores = [float(probs[ev.styles.index(n)]) if n in ev.styles else -1.0 for n in names]
        return int(np.argmax(scores)), "evaluator"
    x = style_view(model, pic, device)  # (K, 3, R, R) in [-1, 1]
    k = model.config.num_domains
    if "discriminator" in getattr(model, "loaded_modules", ()) and hasattr(model, "style_encoder"):
        logits = [float(model.discriminator(x, torch.full((len(x),), y, device=device)).mean())
                  for y in range(k)]
        return int(np.argmax(logits)), "discriminator"
    if style_family(model) != "code":
        return 0, "default"
    if content is None or is_native(model):
        content = model.generator.encode(x)
    errors = []
    for y in range(k):
        s = model.style_from_reference(x, y)
        errors.append(float((model.generator.decode(content, s) - x).abs().mean()))
    return int(np.argmin(errors)), "reconstruction"


def identity_key(model: GANModel) -> str:
    name, version = model_identity(model)
    return f"{name}:{version}" if version else name
