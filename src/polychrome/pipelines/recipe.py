"""Style recipes (what defines one output image) and the content-encoding cache."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import weakref
from collections import OrderedDict
from typing import Any

import torch

from ..errors import PolychromeError
from ..models.base import GANModel

RECIPE_VERSION = 1
StyleLike = Any  # str (name, index, bank:NAME, seed:N, path) | Picture | ndarray | StyleSource


@dataclasses.dataclass
class Recipe:
    """Everything that defines one output image, resolved (see style_codes for components)."""

    op: str  # "restyle" | "mix" | "interpolate"
    components: list[dict[str, Any]]
    weights: list[float] | None = None  # None only for a per-layer crossover
    interp: str = "lerp"  # "slerp": z of 2 latent components of one style, t = weights[1]
    crossover: int | None = None  # stylegan: ws[:, :k] from component 0, ws[:, k:] from 1
    strength: float = 1.0
    source_style: str | None = None  # style of the source picture (when strength < 1)
    source_style_by: str | None = None  # "user" | "evaluator" | "discriminator" | ...
    pixel_blend: float | None = None
    seed: int = 0  # the request's seed for this image (S + k)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. frame, t
    v: int = RECIPE_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            d = json.loads(text)
            recipe = cls(**d)
            if recipe.v != RECIPE_VERSION or not isinstance(recipe.components, list):
                raise ValueError(f"recipe version {recipe.v}")
            _check_stored_weights(recipe)
        except (ValueError, TypeError) as e:
            raise PolychromeError(f"bad style recipe in the image metadata: {e}",
                                  code="bad_metadata") from None
        return recipe


def _check_stored_weights(recipe: Recipe) -> None:
    """A recipe's weights as `Restyler.build` leaves them: one per component, each a finite
    number in [0, 1], summing to 1 (None only with a per-layer crossover). A recipe read
    back from a file is input like any other: huge or negative weights are refused."""
    w = recipe.weights
    if w is None:
        if recipe.crossover is None:
            raise ValueError("weights missing")
        return
    if not isinstance(w, list) or len(w) != len(recipe.components):
        raise ValueError("weights must be a list with one weight per component")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 1
               for x in w):  # NaN and infinities fail the comparison
        raise ValueError(f"weights must be numbers in [0, 1], got {w!r}"[:200])
    if abs(math.fsum(w) - 1.0) > 1e-6:
        raise ValueError(f"weights must sum to 1, got {w!r}"[:200])


def _label(c: dict[str, Any], seed: int) -> str:
    if c["kind"] == "reference":
        return f"ref:{c['sha256'][:8]}"
    if c["kind"] == "bank":
        return f"bank:{c['name']}"
    if c["kind"] == "latent" and c.get("seed") != seed:
        return f"{c['style']}@seed{c['seed']}"
    return str(c["style"])


def summary(recipe: Recipe) -> str:
    """Human-readable style of a recipe: "neon", "0.7*neon+0.3*ref:1a2b3c4d", "a|b@4"."""
    labels = [_label(c, recipe.seed) for c in recipe.components]
    if recipe.crossover is not None:
        return f"{labels[0]}|{labels[1]}@{recipe.crossover}"
    if len(labels) == 1:
        return labels[0]
    return "+".join(f"{w:.3g}*{lab}" for w, lab in zip(recipe.weights or [], labels,
                                                       strict=True))


class ContentCache:
    """LRU of content encodings, keyed by (model object, sha256 of the picture's pixels).

    The model is held weakly and checked on a hit, so a new model at a reused id() never
    sees another model's content. Thread-safe: one cache can serve every API session.
    """

    def __init__(self, maxsize: int = 64):
        self.maxsize = max(1, maxsize)
        self._items: OrderedDict[tuple[int, str], tuple[Any, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, model: GANModel, sha: str) -> Any:
        with self._lock:
            item = self._items.get((id(model), sha))
            if item is None or item[0]() is not model:
                self.misses += 1
                return None
            self._items.move_to_end((id(model), sha))
            self.hits += 1
            return item[1]

    def put(self, model: GANModel, sha: str, content: Any) -> None:
        with self._lock:
            self._items[(id(model), sha)] = (weakref.ref(model), content)
            self._items.move_to_end((id(model), sha))
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)


CONTENT_CACHE = ContentCache()


def check_unit(name: str, value: float) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise PolychromeError(f"{name} must be a number in [0, 1], got {value!r}",
                              code="bad_request")
    return float(value)


def check_seed(seed: int, count: int = 1) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 \
            or seed + count > 2**63 - 1:
        raise PolychromeError(f"seed must be an integer >= 0, got {seed!r}", code="bad_request")
    return seed
