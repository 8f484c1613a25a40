"""The quality of the instrument: no FID/KID/PR without proof that the evaluator can see.

A feature network that cannot tell images apart gives small distances to anything, noise
included, and small distances read as praise. So before any figure is reported, the same
run measures the instrument on the real held-out images (never trained on):

- accuracy: the evaluator's classifier on held-out images, per style (the share of a
  style's images it names right) and overall (their mean: balanced accuracy, so a large
  style cannot hide a small one); the rotation head's too. With one style, the rotation
  head is the classifier that counts. It must reach `Bar.required(chance)` =
  max(chance + margin, min accuracy), overall and for every style (chance: 1 / styles);
- reference distances, all FIDs in the same feature space between half A of the held-out
  set and (half B split the same way per style):
    floor        B itself (real vs real, disjoint halves);
    blurred      B downscaled 4x and back;
    noised       B plus Gaussian noise (std 15 % of the range);
    other_style  per style s, B's images of the other styles vs A's of s (mean over styles;
                 compared with the per-style floors, "floor_per_style");
    ceiling      uniform noise images (as many as B).
  Blurred, noised and other-style must each be at least `min_separation` times their floor.

The floor is measured between halves of the held-out set, so at a smaller sample size than
a model's FID against the whole real set: FID's small-sample bias makes it a generous floor,
and a position slightly below 0 means "within the noise of real vs real".

Below the bar, `require_usable` refuses with a message saying how to get a usable
evaluator; nothing is reported or recorded. Every reported FID comes with its floor and
ceiling and its position between them ((fid - floor) / (ceiling - floor): 0 = as close as
two halves of the real set, 1 = as far as noise).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from ..data.cache import PackedDataset
from ..errors import PolychromeError
from ..settings import get_settings
from .fidelity import fid

BLUR_FACTOR = 4  # blurred reference: downscaled by this, then back (antialiased)
NOISE_STD = 0.15  # noised reference: Gaussian noise, as a share of the 0-255 range
MIN_HALF = 4  # real images per half below which the reference distances mean nothing


class EvaluatorUnusable(PolychromeError):
    """The evaluator failed the bar: its figures are refused, never reported or recorded."""

    code = "evaluator_unusable"
    http_status = 422


@dataclasses.dataclass(frozen=True)
class Bar:
    margin: float = 0.2  # accuracy above chance
    min_accuracy: float = 0.5
    min_separation: float = 3.0  # reference distances, as multiples of their floor

    @classmethod
    def from_settings(cls) -> Bar:
        s = get_settings()
        return cls(margin=s.eval_accuracy_margin, min_accuracy=s.eval_min_accuracy,
                   min_separation=s.eval_min_separation)

    def required(self, chance: float) -> float:
        return min(1.0, max(chance + self.margin, self.min_accuracy))


# -- reference images ------------------------------------------------------------------------
def blurred(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> the same downscaled BLUR_FACTOR x (antialiased) and back."""
    h, w = images.shape[-2:]
    small = F.interpolate(images.float(), size=(max(1, h // BLUR_FACTOR), max(1, w // BLUR_FACTOR)),
                          mode="bilinear", antialias=True, align_corners=False)
    back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return back.round_().clamp_(0, 255).to(torch.uint8)


def noised(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 (N, 3, H, W) plus Gaussian noise (std NOISE_STD of the range), clipped."""
    noise = torch.randn(images.shape, generator=generator) * (NOISE_STD * 255.0)
    return (images.float() + noise).round_().clamp_(0, 255).to(torch.uint8)


def noise_images(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform noise uint8 images of `like`'s shape: what the ceiling is measured on."""
    return torch.randint(0, 256, tuple(like.shape), dtype=torch.uint8, generator=generator)


def halves(labels: torch.Tensor, seed: int) -> tuple[list[int], list[int]]:
    """Rows split in two disjoint halves, every style split evenly (seeded order)."""
    g = torch.Generator().manual_seed(seed)
    a: list[int] = []
    b: list[int] = []
    for d in labels.unique().tolist():
        rows = (labels == d).nonzero().flatten()
        rows = rows[torch.randperm(len(rows), generator=g)].tolist()
        a += rows[0::2]
        b += rows[1::2]
    return sorted(a), sorted(b)


# -- measurements ----------------------------------------------------------------------------
def classifier_accuracy(extractor: Any, held: PackedDataset, bar: Bar) -> dict[str, Any] | None:
    """The extractor's classifier on held-out images (None when it has none: inception)."""
    classify = getattr(extractor, "classify", None)
    styles = list(getattr(extractor, "styles", []) or [])
    if classify is None or len(held) == 0:
        return None
    out: dict[str, Any] = {"n": len(held)}
    rotation = getattr(extractor, "rotation_accuracy", None)
    out["rotation_accuracy"] = float(rotation(held.images)) if rotation is not None else None
    known = [d for d, name in enumerate(held.domains) if name in styles]
    rows = [i for i, d in enumerate(held.labels.tolist()) if d in known]
    if len(styles) >= 2 and len(known) >= 2 and rows:
        want = torch.tensor([styles.index(held.domains[int(held.labels[i])]) for i in rows])
        hit = classify(held.images[rows]).argmax(dim=1) == want
        labels = held.labels[rows]
        per_style = {held.domains[d]: float(hit[labels == d].double().mean())
                     for d in known if bool((labels == d).any())}
        out.update(head="style", accuracy=sum(per_style.values()) / len(per_style),
                   per_style=per_style, chance=1.0 / len(known))
    elif out["rotation_accuracy"] is not None:  # one style: the rotation head is what counts
        out.update(head="rotation", accuracy=out["rotation_accuracy"], per_style={},
                   chance=0.25)
    else:
        return None
    out["required"] = bar.required(out["chance"])
    return out


def reference_distances(extractor: Any, held: PackedDataset, seed: int = 0) -> dict[str, Any]:
    """The FID floor, ceiling and the blurred / noised / other-style references (see above)."""
    a, b = halves(held.labels, seed)
    out: dict[str, Any] = {"n": len(held), "n_half": min(len(a), len(b))}
    if len(a) < MIN_HALF or len(b) < MIN_HALF:
        return out
    g = torch.Generator().manual_seed(seed)
    img_b = held.images[b]
    fa, fb = extractor.features(held.images[a]), extractor.features(img_b)
    out["floor"] = fid(fa, fb)
    out["blurred"] = fid(fa, extractor.features(blurred(img_b)))
    out["noised"] = fid(fa, extractor.features(noised(img_b, g)))
    f_noise = extractor.features(noise_images(img_b, g))
    out["ceiling"] = fid(fa, f_noise)
    la, lb = held.labels[a], held.labels[b]
    per_style: dict[str, dict[str, float]] = {}
    for d in held.labels.unique().tolist():
        sa, sb, other = la == d, lb == d, lb != d
        if int(sa.sum()) < 2 or int(sb.sum()) < 2:
            continue
        entry = {"floor": fid(fa[sa], fb[sb]), "ceiling": fid(fa[sa], f_noise)}
        if int(other.sum()) >= 2:
            entry["other_style"] = fid(fa[sa], fb[other])
        per_style[held.domains[d]] = entry
    out["per_style"] = per_style
    others = [v for v in per_style.values() if "other_style" in v]
    if others:
        out["other_style"] = sum(v["other_style"] for v in others) / len(others)
        out["floor_per_style"] = sum(v["floor"] for v in others) / len(others)
    return out


def problems(accuracy: dict[str, Any] | None, refs: dict[str, Any], bar: Bar) -> list[str]:
    """What keeps the instrument under the bar (empty: usable)."""
    found = []
    if accuracy is not None:
        if accuracy["accuracy"] < accuracy["required"]:
            found.append(f"its {accuracy['head']} classifier is right on "
                         f"{accuracy['accuracy']:.0%} of {accuracy['n']} held-out images"
                         f"{' (mean over styles)' if accuracy['head'] == 'style' else ''} "
                         f"(chance {accuracy['chance']:.0%}, needs {accuracy['required']:.0%})")
        low = {s: v for s, v in accuracy["per_style"].items() if v < accuracy["required"]}
        if low:
            found.append("it recognises " + ", ".join(f"{s} {v:.0%}" for s, v in low.items())
                         + f" of held-out images (needs {accuracy['required']:.0%} of every "
                           "style)")
    if "floor" not in refs:
        found.append(f"the held-out split has {refs['n']} images; the reference distances "
                     f"need at least {MIN_HALF} in each of two halves split evenly by style")
        return found
    checks = [("blurred", refs["floor"]), ("noised", refs["floor"])]
    if "other_style" in refs:
        checks.append(("other_style", refs["floor_per_style"]))
    for key, floor in checks:
        if not refs[key] >= bar.min_separation * floor or not refs[key] > 0:
            ratio = refs[key] / floor if floor > 0 else float("nan")
            found.append(f"{key.replace('_', '-')} images are only {ratio:.3g}x the real-vs-real "
                         f"floor away (FID {refs[key]:.4g} vs {floor:.4g}; needs "
                         f"{bar.min_separation:g}x)")
    return found


def measure_instrument(extractor: Any, held: PackedDataset, *, seed: int = 0,
                       bar: Bar | None = None) -> dict[str, Any]:
    """{"evaluator", "accuracy", "reference", "bar", "problems", "usable"} on held-out images."""
    bar = bar or Bar.from_settings()
    accuracy = classifier_accuracy(extractor, held, bar)
    refs = reference_distances(extractor, held, seed)
    found = problems(accuracy, refs, bar)
    return {"evaluator": extractor.name, "accuracy": accuracy, "reference": refs,
            "bar": dataclasses.asdict(bar), "problems": found, "usable": not found}


def require_usable(instrument: dict[str, Any], *, hint: str) -> None:
    """Raise EvaluatorUnusable (figures refused) unless the instrument cleared the bar."""
    if instrument["usable"]:
        return
    raise EvaluatorUnusable(
        f"no figures reported: the evaluator {instrument['evaluator']} cannot be trusted to "
        f"measure them: {'; '.join(instrument['problems'])}. {hint}")


def position(value: float | None, floor: float | None, ceiling: float | None) -> float | None:
    """Where `value` sits between floor (0) and ceiling (1); None when undefined."""
    if value is None or floor is None or ceiling is None or not ceiling > floor:
        return None
    p = (value - floor) / (ceiling - floor)
    return p if math.isfinite(p) else None


def fid_context(fid_value: float | None, refs: dict[str, Any]) -> dict[str, float | None]:
    """{"fid_floor", "fid_ceiling", "fid_position"} for one whole-set FID."""
    floor, ceiling = refs.get("floor"), refs.get("ceiling")
    return {"fid_floor": floor, "fid_ceiling": ceiling,
            "fid_position": position(fid_value, floor, ceiling)}


def card_figures(instrument: dict[str, Any]) -> dict[str, float]:
    """The instrument's figures for a model card row (flat; per style as `key[style]`)."""
    out: dict[str, float] = {}
    acc = instrument["accuracy"]
    if acc is not None:
        out["evaluator_accuracy"] = acc["accuracy"]
        if acc["rotation_accuracy"] is not None:
            out["evaluator_rotation_accuracy"] = acc["rotation_accuracy"]
        out.update({f"evaluator_accuracy[{s}]": v for s, v in acc["per_style"].items()})
    refs = instrument["reference"]
    for key in ("blurred", "noised", "other_style"):
        if key in refs:
            out[f"ref_{key}"] = refs[key]
    return out


def format_instrument(instrument: dict[str, Any]) -> list[str]:
    """Text lines for `polychrome eval`: the instrument's quality, printed beside its figures."""
    acc, refs = instrument["accuracy"], instrument["reference"]
    lines = [f"  instrument {instrument['evaluator']}"]
    if acc is not None:
        lines.append(f"    held-out accuracy ({acc['head']} head) {acc['accuracy']:.1%} on "
                     f"{acc['n']} images (chance {acc['chance']:.0%}, bar {acc['required']:.0%})"
                     + (f"; rotation head {acc['rotation_accuracy']:.1%}"
                        if acc["head"] == "style" and acc["rotation_accuracy"] is not None
                        else ""))
        if acc["per_style"]:
            lines.append("    per style  " + ", ".join(f"{s} {v:.0%}"
                                                      for s, v in acc["per_style"].items()))
    else:
        lines.append("    no classifier: held-out accuracy not measured")
    if "floor" in refs:
        def ratio(key: str, floor: float) -> str:
            return f"{refs[key]:.4g} ({refs[key] / floor:.3g}x)" if floor > 0 else \
                f"{refs[key]:.4g}"

        line = (f"    FID references (halves of {refs['n_half']}): floor {refs['floor']:.4g}, "
                f"blurred {ratio('blurred', refs['floor'])}, noised "
                f"{ratio('noised', refs['floor'])}")
        if "other_style" in refs:
            line += f", other style {ratio('other_style', refs['floor_per_style'])}"
        lines.append(line + f", ceiling (noise) {refs['ceiling']:.4g}")
    return lines
