"""`Restyler`: a style session on one model (see style.py for the operations and contract)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..errors import PolychromeError
from ..imageio import from_tensor
from ..models.base import GANModel
from ..sampling import (
    GeneratedImage,
    generator_kwargs,
    load_model_on,
    model_identity,
    style_index,
    to_rgb,
)
from . import stylebank
from .recipe import CONTENT_CACHE, ContentCache, Recipe, StyleLike, check_seed, check_unit, summary
from .style_codes import (
    Picture,
    StyleSource,
    guess_domain,
    is_native,
    load_picture,
    normalise_weights,
    parse_size,
    parse_source,
    require_translation,
    size_multiple,
    slerp,
    style_family,
    style_view,
    weighted_sum,
)
from .tiling import TileSettings, configured_tiles, pad_to, padded_size, run_image_model

MEMO_SIZE = 64  # reference pictures / domain guesses remembered per session


class Restyler:
    """A style session on one model: `set_image` encodes once, `render` decodes per style.

    Works for noise models too (no image; `render` then generates). A Restyler is not
    thread-safe (one per session or request), but the model and the content cache it
    uses may be shared by many: rendering changes no state of the model.
    """

    def __init__(self, model: GANModel | str, *, device: str | torch.device = "cpu",
                 cache: ContentCache | None = None, size: int | str | None = None):
        self.device = device
        self.model = load_model_on(model, device)
        # Working size of native (crops-mode) models: None = the picture's own (capped),
        # else its longer side in pixels. Whole-picture models always draw at R x R.
        self.size = parse_size(size)
        self.native = is_native(self.model)
        self.last_tiles = 1
        self.family = style_family(self.model)
        self.cache = CONTENT_CACHE if cache is None else cache
        self.source: Picture | None = None
        self._pictures: OrderedDict[str, Picture] = OrderedDict()  # references by sha256
        self._codes: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
        self._guesses: dict[str, tuple[int, str]] = {}

    # -- inputs -----------------------------------------------------------------------
    def set_image(self, image: Any) -> Picture:
        """The picture to restyle (path, bytes or (H, W, 3) uint8); encodes it once."""
        require_translation(self.model, "restyle")
        self.source = load_picture(self.model, image, size=self.size)
        self.content()
        return self.source

    def take_source(self, source: Any | None, op: str, noise_hint: str = "") -> None:
        """Translation models need an INPUT picture for `op`; noise models take none."""
        if self.model.family == "translation":
            if source is None:
                raise PolychromeError(f"{self.model.name} is a translation model: {op} needs an "
                                      "INPUT image to restyle", code="missing_input")
            self.set_image(source)
        elif source is not None:
            raise PolychromeError(f"{self.model.name} is a noise → image model: it takes no "
                                  f"INPUT image{noise_hint}", code="wrong_family")

    def content(self) -> Any:
        """G.encode(source) (opaque to the pipeline; decode takes it back), from the LRU
        when this picture was seen; None for models without an encode/decode split."""
        if self.source is None:
            raise PolychromeError(f"{self.model.name} restyles an image: give an INPUT image",
                                  code="missing_input")
        if self.family != "code":
            return None
        if self.native and not self._fits():
            return None  # tiled: every render runs G on each tile (pipelines/tiling.py)
        c = self.cache.get(self.model, self.source.sha256)
        if c is None:
            with torch.inference_mode():
                c = self.model.generator.encode(self._padded()[0])
            self.cache.put(self.model, self.source.sha256, c)
        return c

    # -- native size ------------------------------------------------------------------
    def tile_settings(self) -> TileSettings:
        return configured_tiles()

    def _fits(self) -> bool:
        """The source runs in one pass (no tiles) at the working size."""
        h, w = self.source.array.shape[:2]
        hp, wp = padded_size(h, w, size_multiple(self.model))
        return hp * wp <= self.tile_settings().max_pixels

    def _padded(self) -> tuple[torch.Tensor, tuple[slice, slice]]:
        """The source padded to the generator's stride as `run_image_model` pads it:
        (1, 3, Hp, Wp) in [-1, 1] and the (rows, cols) slices that undo it. Whole models
        need no padding."""
        x = self.source.tensor(self.device)  # (1, 3, H, W) in [-1, 1]
        h, w = x.shape[-2:]
        if not self.native:
            return x, (slice(0, h), slice(0, w))
        xp, top, left = pad_to(x, *padded_size(h, w, size_multiple(self.model)))
        return xp, (slice(top, top + h), slice(left, left + w))

    def _image_model(self, fn) -> torch.Tensor:
        """Run fn (a fully convolutional G) on the whole source through the tiling engine."""
        out, info = run_image_model(fn, self.source.tensor(self.device),
                                    multiple=size_multiple(self.model),
                                    settings=self.tile_settings())
        self.last_tiles = int(info["tiles"])
        return out

    def add_reference(self, image: Any) -> Picture:
        """Make a reference picture known (regeneration; API uploads) and return it."""
        return self._remember(load_picture(self.model, image, reference=True))

    def _remember(self, pic: Picture) -> Picture:
        # bounded: a live session may see many references
        self._pictures[pic.sha256] = pic
        self._pictures.move_to_end(pic.sha256)
        while len(self._pictures) > MEMO_SIZE:
            self._pictures.popitem(last=False)
        return pic

    def _domain_of(self, pic: Picture) -> tuple[int, str]:
        if pic.sha256 not in self._guesses:
            same = self.source is not None and self.source.sha256 == pic.sha256
            content = self.content() if same else None
            if len(self._guesses) >= MEMO_SIZE:
                self._guesses.clear()
            self._guesses[pic.sha256] = guess_domain(self.model, pic, content, self.device)
        return self._guesses[pic.sha256]

    # -- building a recipe ------------------------------------------------------------
    def component(self, src: StyleSource, seed: int, domain: int | None = None) -> dict[str, Any]:
        """Resolve a source (its style domain included) into a recorded component."""
        names, fam = self.model.style_names, self.family
        if fam == "fixed":
            if src.kind != "learned":
                raise PolychromeError(f"{self.model.name} has no style codes: it only translates "
                                      f"into one of its styles ({', '.join(names)})",
                                      code="unsupported")
            return {"kind": "target", "style": names[src.domain]}
        if src.kind == "learned":
            return {"kind": "latent", "style": names[src.domain], "seed": seed}
        if src.kind == "bank":
            _, entry = stylebank.load_style(self.model, src.bank or "")
            return {"kind": "bank", "name": src.bank, "code_sha256": entry["code_sha256"]}
        dom = src.domain if src.domain is not None else domain
        if src.kind == "seed":
            if dom is None:
                if fam == "code":
                    raise PolychromeError(f"{src.text} needs a style on a translation model "
                                          "(give --style)", code="bad_request")
                dom = src.seed % len(names)  # as `generate --seed N` would pick
            return {"kind": "latent", "style": names[dom], "seed": src.seed}
        if fam != "code":
            raise PolychromeError(f"{self.model.name} has no style encoder: reference pictures "
                                  "need a stargan model", code="unsupported")
        pic = self._remember(src.picture)
        how = "user"
        if dom is None:
            dom, how = self._domain_of(pic)
        return {"kind": "reference", "style": names[dom], "sha256": pic.sha256, "domain_by": how}

    def build(self, styles: Sequence[tuple[StyleLike, float]], *, op: str, seed: int = 0,
              strength: float = 1.0, pixel_blend: float | None = None,
              reference_style: str | int | None = None, source_style: str | int | None = None,
              crossover: int | None = None) -> Recipe:
        """A recipe from (style, weight) pairs and options; validates against the family."""
        check_seed(seed)
        fam, model = self.family, self.model
        strength = check_unit("strength", strength)
        if pixel_blend is not None:
            pixel_blend = check_unit("pixel blend", pixel_blend)
        if model.family == "translation" and self.source is None:
            raise PolychromeError(f"{model.name} is a translation model: give an INPUT image "
                                  "to restyle", code="missing_input")
        if model.family != "translation" and (strength != 1.0 or pixel_blend is not None):
            raise PolychromeError("strength and pixel blend apply to restyling an INPUT image "
                                  "(translation models)", code="unsupported")
        ref_dom = style_index(model, reference_style) if reference_style is not None else None
        sources = [parse_source(model, s, domain=ref_dom, allow_reference=fam == "code")
                   for s, _ in styles]
        comps = [self.component(src, seed) for src in sources]
        try:
            weights = [float(w) for _, w in styles]
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float
            raise PolychromeError(f"style weights must be numbers, got "
                                  f"{[w for _, w in styles]!r}", code="bad_weight") from None
        if crossover is not None:
            if fam != "w":
                raise PolychromeError(f"per-layer mixing needs a style-based generator "
                                      f"(stylegan); {model.name} has no per-layer styles",
                                      code="unsupported")
            n = model.generator.num_ws
            if len(comps) != 2 or not 0 <= crossover <= n:
                raise PolychromeError(f"per-layer mixing takes exactly 2 styles and a crossover "
                                      f"layer in 0..{n}", code="bad_request")
            weights_out: list[float] | None = None
        else:
            weights_out = normalise_weights(weights)
        self._check_blend(comps)
        recipe = Recipe(op=op, components=comps, weights=weights_out, crossover=crossover,
                        strength=strength, pixel_blend=pixel_blend, seed=seed)
        if fam == "fixed" and strength != 1.0:
            raise PolychromeError(f"{model.name} has no style codes: strength needs a stargan "
                                  "(use --pixel-blend to fade instead)", code="unsupported")
        if strength != 1.0:
            if source_style is not None:
                recipe.source_style = model.style_names[style_index(model, source_style)]
                recipe.source_style_by = "user"
            else:
                dom, how = self._domain_of(self.source)
                recipe.source_style, recipe.source_style_by = model.style_names[dom], how
        return recipe

    def _check_blend(self, comps: list[dict[str, Any]]) -> None:
        fam, name = self.family, self.model.name
        if len(comps) > 1 and fam == "fixed":
            raise PolychromeError(f"{name} has no style codes to blend: it translates into one "
                                  "style at a time", code="unsupported")
        if fam in ("label", "plain") and len({c["seed"] for c in comps}) > 2:
            raise PolychromeError("a blend on this model takes at most 2 different seeds",
                                  code="unsupported")

    # -- running ----------------------------------------------------------------------
    def _z(self, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(seed))
        return self.model.sample_z(1, generator=g, device="cpu").to(self.device)  # (1, z_dim)

    def _map(self, z: torch.Tensor, style: str) -> torch.Tensor:
        y = torch.tensor([style_index(self.model, style)], dtype=torch.int64, device=self.device)
        if self.family == "code":
            return self.model.style_from_latent(z, y)  # (1, style_dim)
        return self.model.generator.mapping(z, y if self.model.config.num_domains > 1 else None)

    def _code(self, c: dict[str, Any]) -> torch.Tensor:
        if c["kind"] == "latent":
            return self._map(self._z(c["seed"]), c["style"])
        if c["kind"] == "bank":
            code, entry = stylebank.load_style(self.model, c["name"])
            if c.get("code_sha256") and entry["code_sha256"] != c["code_sha256"]:
                raise PolychromeError(f"style bank entry {c['name']!r} is not the code this "
                                      "image was made with (it was removed and saved again)",
                                      code="bad_style")
            return code.unsqueeze(0).to(self.device)
        pic = self._pictures.get(c["sha256"])
        if pic is None:
            raise PolychromeError(f"reference picture {c['sha256'][:12]}… is missing",
                                  code="missing_reference")
        self._pictures.move_to_end(pic.sha256)  # in use: the last to be forgotten
        y = style_index(self.model, c["style"])
        key = (pic.sha256, y)
        if key not in self._codes:
            view = style_view(self.model, pic, self.device)  # (K, 3, R, R): crops of natives
            self._codes[key] = self.model.style_from_reference(view, y).mean(0, keepdim=True)
            while len(self._codes) > 4 * MEMO_SIZE:
                self._codes.popitem(last=False)
        return self._codes[key]

    def code(self, recipe: Recipe) -> torch.Tensor:
        """The target code of a recipe: s (1, style_dim), w (1, w_dim) or ws (1, num_ws, w_dim)."""
        comps = recipe.components
        with torch.inference_mode():
            if recipe.interp == "slerp":
                z = slerp(self._z(comps[0]["seed"]), self._z(comps[1]["seed"]),
                          recipe.weights[1])
                return self._map(z, comps[0]["style"])
            codes = [self._code(c) for c in comps]
            if recipe.crossover is not None:
                k, n = recipe.crossover, self.model.generator.num_ws
                return torch.cat([codes[0].unsqueeze(1).expand(-1, k, -1),
                                  codes[1].unsqueeze(1).expand(-1, n - k, -1)], dim=1)
            return weighted_sum(codes, recipe.weights)

    def _label_forward(self, recipe: Recipe) -> torch.Tensor:
        comps, model = recipe.components, self.model
        seeds = [c["seed"] for c in comps]
        if len(set(seeds)) == 1:
            z = self._z(seeds[0])
        else:  # two seeds: t is the second one's weight
            z = slerp(self._z(seeds[0]), self._z(seeds[1]), recipe.weights[1])
        return model.generator(z, self._label(recipe), **generator_kwargs(model, 1.0))

    def _label(self, recipe: Recipe) -> torch.Tensor | None:
        """The generator's y for a recipe: None (one style), (1,) int64 when every component
        has the same style (bit-identical to `generate`), else (1, num_domains) float
        weights: the soft label of the blend, an input, so the shared model is untouched."""
        k = self.model.config.num_domains
        if k <= 1:
            return None
        ys = [style_index(self.model, c["style"]) for c in recipe.components]
        if len(set(ys)) == 1:
            return torch.tensor([ys[0]], dtype=torch.int64, device=self.device)
        soft = [0.0] * k
        for y, w in zip(ys, recipe.weights, strict=True):
            soft[y] += w  # the same style twice (two seeds) adds up
        return torch.tensor([soft], dtype=torch.float32, device=self.device)

    def run(self, recipe: Recipe, *, index: int = 0) -> GeneratedImage:
        """Render a recipe: (H, W, 3) uint8 and its metadata.

        Native models give the working size back exactly (tiled above the memory budget);
        whole-picture models draw at R x R and give it back at the source's aspect.
        """
        model, fam = self.model, self.family
        self.last_tiles = 1
        with torch.inference_mode():
            if fam in ("code", "fixed"):
                if fam == "fixed":
                    y = style_index(model, recipe.components[0]["style"])
                    out = self._image_model(lambda t: model.translate(t, y)) if self.native \
                        else model.translate(self.source.tensor(self.device), y)
                else:
                    s = self.target_code(recipe)
                    content = self.content()
                    if content is None:  # tiled
                        out = self._image_model(lambda t: model.generator(t, s))
                    else:
                        rows, cols = self._padded()[1]
                        out = model.generator.decode(content, s)[:, :, rows, cols]
                if recipe.pixel_blend is not None:
                    b = recipe.pixel_blend
                    x = self.source.tensor(self.device)  # (1, 3, H, W) in [-1, 1]
                    out = (1.0 - b) * x + b * out
            elif fam == "w":
                out = model.generator.synthesis(self.code(recipe), noise_mode="const")
            else:
                out = self._label_forward(recipe)
        return self.image(out, recipe, index)

    def target_code(self, recipe: Recipe) -> torch.Tensor:
        """The code G decodes for the current source: the recipe's code, moved from the
        source's own code by `strength` when it is below 1. (1, style_dim)."""
        with torch.inference_mode():
            s = self.code(recipe)
            if recipe.strength != 1.0:  # s_src = E(x, y_src): the source's own style
                s_src = self._code({"kind": "reference", "style": recipe.source_style,
                                    "sha256": self._source_ref()})
                a = recipe.strength
                s = (1.0 - a) * s_src + a * s
        return s

    def image(self, out: torch.Tensor, recipe: Recipe, index: int) -> GeneratedImage:
        """What the model drew for the current source, (1, 3, h, w) in [-1, 1], as the
        recipe's picture with its metadata (whole models: back at the source's aspect)."""
        return self.picture(from_tensor(to_rgb(out)[0]), recipe, index)

    def picture(self, array: np.ndarray, recipe: Recipe, index: int) -> GeneratedImage:
        """`image` from the drawing as (h, w, 3) uint8."""
        drawn = f"{array.shape[1]}x{array.shape[0]}"
        if self.source is not None and not self.native:
            array = self._at_aspect(array)
        return GeneratedImage(array=array, metadata={**self.metadata(recipe, index),
                                                     "drawn_at": drawn,
                                                     "width": str(array.shape[1]),
                                                     "height": str(array.shape[0]),
                                                     "tiles": str(self.last_tiles)})

    def _at_aspect(self, array: np.ndarray) -> np.ndarray:
        """A whole model's R x R drawing given back at the source's aspect (longer side R):
        stretched back, or the padding cut off for models trained with fit "pad"."""
        h0, w0 = self.source.aspect
        r = array.shape[0]
        if h0 == w0 or not h0 or not w0:
            return array
        h, w = (r, max(1, round(r * w0 / h0))) if h0 > w0 else (max(1, round(r * h0 / w0)), r)
        if str(self.model.meta.get("fit")) == "pad":
            top, left = (r - h) // 2, (r - w) // 2
            return np.ascontiguousarray(array[top:top + h, left:left + w])
        return np.array(Image.fromarray(array, mode="RGB").resize((w, h),
                                                                 Image.Resampling.LANCZOS))

    def _source_ref(self) -> str:
        return self._remember(self.source).sha256  # E(x, y_src) uses the reference memo

    def metadata(self, recipe: Recipe, index: int = 0) -> dict[str, str]:
        name, version = model_identity(self.model)
        refs = [c["sha256"] for c in recipe.components if c["kind"] == "reference"]
        return {
            "model": name, "version": version, "arch": self.model.name, "op": recipe.op,
            "style": summary(recipe), "seed": str(recipe.seed),
            "strength": repr(recipe.strength),
            "pixel_blend": "" if recipe.pixel_blend is None else repr(recipe.pixel_blend),
            "source_sha256": self.source.sha256 if self.source is not None else "",
            "source_style": recipe.source_style or "",
            "reference_sha256s": ",".join(refs), "index": str(index),
            "recipe": recipe.to_json(), "polychrome_version": __version__,
            "size": ("native" if self.size is None else str(self.size)) if self.native else "",
            **{k: str(v) for k, v in recipe.extra.items()},  # e.g. frame, t (interpolate)
        }

    def render(self, style: StyleLike | Sequence[tuple[StyleLike, float]], *,
               strength: float = 1.0, seed: int = 0, pixel_blend: float | None = None,
               reference_style: str | int | None = None, source_style: str | int | None = None,
               crossover: int | None = None, op: str = "restyle",
               index: int = 0) -> GeneratedImage:
        """One image: `style` is one style or a list of (style, weight) pairs (a blend)."""
        pairs = list(style) if isinstance(style, list | tuple) else [(style, 1.0)]
        recipe = self.build(pairs, op=op, seed=seed, strength=strength, pixel_blend=pixel_blend,
                            reference_style=reference_style, source_style=source_style,
                            crossover=crossover)
        return self.run(recipe, index=index)

    def save_style(self, name: str, recipe: Recipe) -> dict[str, Any]:
        """Store a recipe's target code (before strength) in the style bank as `name`."""
        if recipe.crossover is not None:
            raise PolychromeError("a per-layer mix is not one code: save each style separately",
                                  code="unsupported")
        files = {sha: p.file_sha256 for sha, p in self._pictures.items()}
        comps = [{**c, "file_sha256": files.get(c.get("sha256", ""))}
                 if c["kind"] == "reference" else c for c in recipe.components]
        source = {"components": comps, "weights": recipe.weights, "interp": recipe.interp}
        return stylebank.save_style(self.model, name, self.code(recipe)[0], source)
